"""llm and webhook nodes on a call (real VAD/STT/TTS models): a streamed LLM answer is
spoken sentence by sentence before the endpoint finishes, timeouts and webhook failures
take the error port, barge-in cancels the stream, secrets never reach logs or reprs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loadtest.audio import read_mulaw_wav
from tests.agents.test_pipeline import Harness
from tests.agents.test_side_work import (
    API_KEY,
    SIGNING_KEY,
    FakeChatCompletions,
    FakeWebhookReceiver,
    Gate,
)
from tests.agents.test_worker import FLOW as INTENT_FLOW
from tests.agents.test_worker import caller_final
from voxgate.agents import ipc
from voxgate.agents.flowspec import parse_flow
from voxgate.agents.pipeline import CallPipeline, PipelineResources
from voxgate.agents.side_work import SideWorkHttp
from voxgate.agents.stt import SpeechRecognizer
from voxgate.agents.tts import SpeechSynthesizer
from voxgate.agents.vad import VadPool

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
SORRY = "Sorry, the assistant is unavailable."


@pytest.fixture(scope="module")
def resources() -> Iterator[PipelineResources]:
    res = PipelineResources(
        stt=SpeechRecognizer(),
        tts=SpeechSynthesizer(),
        vad_pool=VadPool(),
        inference=ThreadPoolExecutor(3),
        realtime=ThreadPoolExecutor(2),
        # The fakes listen on loopback.
        side_work=SideWorkHttp(allow_private_webhooks=True),
    )
    yield res
    res.close()


@pytest.fixture
async def res(resources: PipelineResources) -> AsyncIterator[PipelineResources]:
    yield resources
    await resources.side_work.close()  # its session belongs to this test's loop


@pytest.fixture
async def llm() -> AsyncIterator[FakeChatCompletions]:
    server = FakeChatCompletions()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def hook() -> AsyncIterator[FakeWebhookReceiver]:
    receiver = FakeWebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


def _doc(nodes: list[dict[str, Any]], edges: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "schema": "flowspec/1", "id": "side", "locale": "en-US", "slots": [], "intents": [],
        "entities": [], "globals": [], "layout": {}, "nodes": nodes,
        "edges": [
            {"id": f"e{i}", "source": s, "port": p, "target": t}
            for i, (s, p, t) in enumerate(edges)
        ],
    }  # fmt: skip


def _llm_flow(timeout: float = 10.0) -> dict[str, Any]:
    return _doc(
        [
            {"id": "start", "type": "start"},
            {"id": "ai", "type": "llm", "prompt": "Greet the caller.", "timeout": timeout},
            {"id": "sorry", "type": "say", "text": SORRY},
            {"id": "end", "type": "hangup"},
        ],
        [("start", "next", "ai"), ("ai", "next", "end"), ("ai", "error", "sorry"),
         ("sorry", "next", "end")],
    )  # fmt: skip


def _webhook_flow(url: str) -> dict[str, Any]:
    return _doc(
        [
            {"id": "start", "type": "start"},
            {"id": "hook", "type": "webhook", "url": url, "timeout": 5.0},
            {"id": "ok", "type": "say", "text": "See you soon."},
            {"id": "failed", "type": "say", "text": "Booking failed, sorry."},
            {"id": "end", "type": "hangup"},
        ],
        [("start", "next", "hook"), ("hook", "success", "ok"), ("hook", "error", "failed"),
         ("ok", "next", "end"), ("failed", "next", "end")],
    )  # fmt: skip


def _start(
    resources: PipelineResources, doc: dict[str, Any], secrets: ipc.CallSecrets, ack: bool = True
) -> tuple[Harness, CallPipeline, asyncio.Task[None], ipc.StartCall]:
    h = Harness(ack)
    start = ipc.StartCall(call_id="c", tenant_id="t", agent_id="a", flow=doc, secrets=secrets)
    pipeline = CallPipeline(start, resources, h.send, flow=parse_flow(doc)[0])
    h.pipeline = pipeline
    return h, pipeline, asyncio.get_running_loop().create_task(pipeline.run()), start


async def _stop(pipeline: CallPipeline, task: asyncio.Task[None]) -> None:
    pipeline.end("test")
    await asyncio.wait_for(task, 30)


def _says(h: Harness) -> list[str]:
    return [f.text for f in h.log if isinstance(f, ipc.AgentSay)]


async def test_llm_answer_is_spoken_sentence_by_sentence_while_it_streams(
    res: PipelineResources, llm: FakeChatCompletions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gate = Gate()
    llm.script = ["Welcome to the clinic.", " We are open", gate, " from nine to five today."]
    secrets = ipc.CallSecrets(llm=llm.secret())
    h, pipeline, task, start = _start(res, _llm_flow(), secrets)
    first = await h.until(lambda f: isinstance(f, ipc.AudioOut))
    # The caller hears the first sentence while the endpoint is still generating.
    assert isinstance(first, ipc.AudioOut) and not llm.finished.is_set()
    assert _says(h) == ["Welcome to the clinic."]
    gate.open()
    hangup = await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    assert _says(h) == ["Welcome to the clinic.", "We are open from nine to five today."]
    heard = [f.text for f in h.log if isinstance(f, ipc.Transcript) and f.role == "agent"]
    assert " ".join(heard) == "Welcome to the clinic. We are open from nine to five today."
    # The reply went out before the hangup, which followed the node's next port.
    assert h.log.index(hangup) > max(i for i, f in enumerate(h.log) if isinstance(f, ipc.AudioOut))
    assert llm.auth == [f"Bearer {API_KEY}"]
    # Secrets: nowhere in the log, nor in any frame's repr.
    for text in (caplog.text, repr(start), *(repr(f) for f in h.log)):
        assert API_KEY not in text


async def test_llm_timeout_takes_the_error_port(
    res: PipelineResources, llm: FakeChatCompletions
) -> None:
    llm.script = ["Let me", "hang"]
    h, pipeline, task, _ = _start(res, _llm_flow(timeout=0.5), ipc.CallSecrets(llm=llm.secret()))
    await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    assert _says(h) == [SORRY]


async def test_llm_without_secret_takes_the_error_port(res: PipelineResources) -> None:
    h, pipeline, task, _ = _start(res, _llm_flow(), ipc.CallSecrets())
    await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    assert _says(h) == [SORRY]


async def test_webhook_success_port(
    res: PipelineResources, hook: FakeWebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ipc.CallSecrets(webhook={"secret": SIGNING_KEY})
    h, pipeline, task, start = _start(res, _webhook_flow(hook.url), secrets)
    await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    # The receiver's "say" is spoken, then the success branch.
    assert _says(h) == ["Booked.", "See you soon."]
    assert hook.signatures_ok == [True]
    assert hook.bodies[0]["node_id"] == "hook" and hook.bodies[0]["flow_id"] == "side"
    for text in (caplog.text, repr(start), *(repr(f) for f in h.log)):
        assert SIGNING_KEY not in text


async def test_webhook_error_port(res: PipelineResources, hook: FakeWebhookReceiver) -> None:
    hook.mode = "500"
    secrets = ipc.CallSecrets(webhook={"secret": SIGNING_KEY})
    h, pipeline, task, _ = _start(res, _webhook_flow(hook.url), secrets)
    await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    assert _says(h) == ["Booking failed, sorry."]


async def test_knowledge_node_is_not_found_on_a_call(res: PipelineResources) -> None:
    doc = _doc(
        [
            {"id": "start", "type": "start"},
            {"id": "kb", "type": "knowledge", "query": "parking"},
            {"id": "yes", "type": "say", "text": "Found it."},
            {"id": "no", "type": "say", "text": "I don't know that yet."},
            {"id": "end", "type": "hangup"},
        ],
        [("start", "next", "kb"), ("kb", "found", "yes"), ("kb", "not_found", "no"),
         ("yes", "next", "end"), ("no", "next", "end")],
    )  # fmt: skip
    h, pipeline, task, _ = _start(res, doc, ipc.CallSecrets())
    await h.until(lambda f: isinstance(f, ipc.Hangup))
    await _stop(pipeline, task)
    assert _says(h) == ["I don't know that yet."]


async def test_barge_in_cancels_the_llm_stream_and_the_caller_is_answered(
    res: PipelineResources, llm: FakeChatCompletions
) -> None:
    gate = Gate()
    llm.script = ["Welcome to the clinic, we have a lot to tell you.", " Here is", gate, " more."]
    nodes = [dict(n) for n in INTENT_FLOW["nodes"]]
    nodes[1] = {"id": "ai", "type": "llm", "prompt": "Greet the caller.", "timeout": 30.0}
    edges = [dict(e) for e in INTENT_FLOW["edges"]]
    edges[0]["target"], edges[1]["source"] = "ai", "ai"
    doc = {**INTENT_FLOW, "nodes": nodes, "edges": edges}
    # Marks are never acknowledged: the answer is still "playing" when the caller talks.
    h, pipeline, task, _ = _start(res, doc, ipc.CallSecrets(llm=llm.secret()), ack=False)
    await h.until(lambda f: isinstance(f, ipc.AudioOut))
    phrase = read_mulaw_wav(AUDIO / "opening_hours_saturday.wav") + b"\xff" * 8000
    for seq, i in enumerate(range(0, len(phrase), 160)):
        pipeline.feed_audio(ipc.AudioIn(call_id="c", seq=seq, ulaw=phrase[i : i + 160]))
        await pipeline.audio_processed()
    await h.until(lambda f: isinstance(f, ipc.Interrupt))
    await asyncio.wait_for(llm.disconnected.wait(), 10)  # generation stopped
    final = await h.until(caller_final)
    assert "opening hours" in final.text.lower()
    reply = await h.until(lambda f: isinstance(f, ipc.AgentSay))
    assert reply.text == "We open at eight and close at six."
    gate.open()
    await _stop(pipeline, task)
    assert "more." not in " ".join(_says(h)) and not llm.finished.is_set()
