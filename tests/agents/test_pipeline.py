from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loadtest.audio import read_mulaw_wav
from tests.agents.test_stt import wer
from tests.agents.test_worker import FLOW, caller_final
from voxgate.agents import ipc
from voxgate.agents.flowspec import parse_flow
from voxgate.agents.pipeline import CallPipeline, PipelineResources, sounds_finished
from voxgate.agents.prompt_cache import PromptCache
from voxgate.agents.stt import SpeechRecognizer
from voxgate.agents.tts import SpeechSynthesizer
from voxgate.agents.vad import VadPool

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
LONG_GREETING = (
    "Hello, thanks for calling the front desk. We are open every day from eight to six. "
    "You can ask about opening hours or book an appointment. How can I help?"
)


@pytest.fixture(scope="module")
def resources() -> Iterator[PipelineResources]:
    res = PipelineResources(
        stt=SpeechRecognizer(),
        tts=SpeechSynthesizer(),
        vad_pool=VadPool(),
        inference=ThreadPoolExecutor(3),
        realtime=ThreadPoolExecutor(2),
    )
    yield res
    res.close()


class Harness:
    def __init__(self, ack_marks: bool) -> None:
        self.frames: asyncio.Queue[ipc.Frame] = asyncio.Queue()
        self.log: list[ipc.Frame] = []
        self.ack_marks = ack_marks
        self.pipeline: CallPipeline | None = None

    async def send(self, frame: ipc.Frame) -> None:
        self.log.append(frame)
        await self.frames.put(frame)
        if self.ack_marks and isinstance(frame, ipc.AudioOut) and frame.mark:
            assert self.pipeline is not None
            self.pipeline.on_mark(frame.mark)

    async def until(self, pred: Any) -> Any:
        for _ in range(5000):
            frame = await asyncio.wait_for(self.frames.get(), 60)
            if pred(frame):
                return frame
        raise AssertionError("never arrived")


def _flow(greeting: str) -> dict[str, Any]:
    nodes = [dict(n) for n in FLOW["nodes"]]
    nodes[1]["text"] = greeting
    return {**FLOW, "nodes": nodes}


async def _start(
    resources: PipelineResources, settings: ipc.CallSettings, greeting: str, ack: bool
) -> tuple[Harness, CallPipeline, asyncio.Task[None]]:
    h = Harness(ack)
    doc = _flow(greeting)
    start = ipc.StartCall(call_id="c", tenant_id="t", agent_id="a", flow=doc, settings=settings)
    pipeline = CallPipeline(start, resources, h.send, flow=parse_flow(doc)[0])
    h.pipeline = pipeline
    return h, pipeline, asyncio.get_running_loop().create_task(pipeline.run())


async def _feed(pipeline: CallPipeline, ulaw: bytes, batch: int = 10) -> None:
    for seq, i in enumerate(range(0, len(ulaw), 160)):
        pipeline.feed_audio(ipc.AudioIn(call_id="c", seq=seq, ulaw=ulaw[i : i + 160]))
        if seq % batch == batch - 1:
            await pipeline.audio_processed()
    await pipeline.audio_processed()


async def _stop(pipeline: CallPipeline, task: asyncio.Task[None]) -> None:
    pipeline.end("test")
    await asyncio.wait_for(task, 30)


async def test_cached_static_prompt_plays_without_synthesis(
    resources: PipelineResources, tmp_path: Path
) -> None:
    cache = PromptCache(tmp_path, resources.tts.settings_key)
    await asyncio.to_thread(cache.build, ["Hi there."], resources.tts)
    expected = cache.get("Hi there.")
    settings = ipc.CallSettings(prompt_cache_dir=str(tmp_path))
    h, pipeline, task = await _start(resources, settings, "Hi there.", ack=True)
    say = await h.until(lambda f: isinstance(f, ipc.AgentSay))
    assert say.mark is not None  # whole prompt known up front: one mark
    chunks = []
    while True:
        out = await h.until(lambda f: isinstance(f, ipc.AudioOut))
        chunks.append(out.ulaw)
        if out.mark:
            break
    assert b"".join(chunks) == expected
    assert out.mark == say.mark
    await _stop(pipeline, task)


async def test_turn_with_partials_final_and_reply(resources: PipelineResources) -> None:
    h, pipeline, task = await _start(resources, ipc.CallSettings(), "Hi.", ack=True)
    await h.until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    phrase = read_mulaw_wav(AUDIO / "book_appointment.wav") + b"\xff" * 8000
    # Mid-utterance (2 s in), a partial hypothesis arrives before the caller is done.
    await _feed(pipeline, phrase[:16000])
    partial = await h.until(lambda f: isinstance(f, ipc.Transcript) and f.role == "caller")
    assert not partial.final and "appointment" not in partial.text.lower()
    assert partial.text.lower().startswith("hi")
    # Frame by frame from here: once the pause starts a speculative decode, let it finish
    # (as it would at real time, within the 120 ms before the early end).
    awaited: list[object] = []
    for i in range(16000, len(phrase), 160):
        await _feed(pipeline, phrase[i : i + 160])
        spec = pipeline.speculation
        if spec is not None and spec not in awaited:
            awaited.append(spec)
            await spec
    assert awaited
    final = await h.until(caller_final)
    assert wer("Hi, I'd like to book an appointment for tomorrow morning.", final.text) == 0
    reply = await h.until(lambda f: isinstance(f, ipc.AgentSay))
    assert reply.text == "Happy to book that."
    await h.until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    starts = [f for f in h.log if isinstance(f, ipc.SpeechStarted)]
    ends = [f for f in h.log if isinstance(f, ipc.SpeechEnded)]
    assert abs(starts[0].at - 0.32) < 0.1 and abs(ends[0].at - 3.16) < 0.15
    await _stop(pipeline, task)
    turn = pipeline.turn_records[0]
    assert turn.intent == "booking" and turn.agent_text == "Happy to book that."
    assert turn.heard_text == "Happy to book that."
    assert turn.latencies["endpointing"] <= 0.45
    # The final decode started in the pause before the endpoint and was reused.
    assert pipeline.speculative_hits == 1
    assert turn.latencies["stt_wait"] <= turn.latencies["stt"] + 0.05
    # A finished sentence: the turn ended after the early silence, not min_silence_ms.
    assert pipeline.early_ends == 1 and turn.latencies["endpointing"] < 0.4


async def test_unfinished_sentence_waits_full_silence(resources: PipelineResources) -> None:
    # Whisper writes this one without a final full stop ("... 4 5 7 2").
    h, pipeline, task = await _start(resources, ipc.CallSettings(), "Hi.", ack=True)
    await h.until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    await _feed(pipeline, read_mulaw_wav(AUDIO / "order_number_4572.wav") + b"\xff" * 8000)
    final = await h.until(caller_final)
    await _stop(pipeline, task)
    assert not sounds_finished(final.text), final.text
    assert pipeline.early_ends == 0
    assert 0.4 <= pipeline.turn_records[0].latencies["endpointing"] <= 0.45


def test_sounds_finished() -> None:
    assert sounds_finished("Goodbye.") and sounds_finished("Can you repeat that please? ")
    assert not sounds_finished("Yes,") and not sounds_finished("My order number is 4 5 7 2")
    assert not sounds_finished("I was going to...")


async def test_speculation_dropped_when_caller_speaks_on(resources: PipelineResources) -> None:
    # "Yes, ... that works for me.": the pause after "Yes," is long enough to start a
    # speculative decode, which must be dropped when the caller goes on.
    h, pipeline, task = await _start(resources, ipc.CallSettings(), "Hi.", ack=True)
    await h.until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    yes = read_mulaw_wav(AUDIO / "yes_that_works.wav")
    # Stretch the fixture's 256 ms pause by 40 ms: still shorter than the early end
    # (320 ms), which "Yes." would otherwise trigger.
    cut = int(0.78 * 8000)
    phrase = yes[:cut] + b"\xff" * int(0.04 * 8000) + yes[cut:] + b"\xff" * 8000
    await _feed(pipeline, phrase, batch=1)
    final = await h.until(caller_final)
    assert wer("Yes, that works for me.", final.text) == 0, final.text
    await _stop(pipeline, task)
    assert pipeline.speculative_hits == 1 and pipeline.speculative_misses >= 1
    assert len(pipeline.turn_records) == 1


async def test_speculation_off_still_transcribes(resources: PipelineResources) -> None:
    h = Harness(ack_marks=True)
    doc = _flow("Hi.")
    start = ipc.StartCall(call_id="c", tenant_id="t", agent_id="a", flow=doc)
    pipeline = CallPipeline(start, resources, h.send, flow=parse_flow(doc)[0], speculative_ms=0)
    h.pipeline = pipeline
    task = asyncio.get_running_loop().create_task(pipeline.run())
    await h.until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    await _feed(pipeline, read_mulaw_wav(AUDIO / "opening_hours_saturday.wav") + b"\xff" * 8000)
    reply = await h.until(lambda f: isinstance(f, ipc.AgentSay))
    assert reply.text == "We open at eight and close at six."
    await _stop(pipeline, task)
    assert pipeline.speculative_hits == 0 and pipeline.speculative_misses == 0


async def test_live_reply_first_piece_is_a_short_clause(resources: PipelineResources) -> None:
    # No prompt cache: the greeting is synthesized live, its first clause on its own.
    h, pipeline, task = await _start(resources, ipc.CallSettings(), LONG_GREETING, ack=True)
    await h.until(lambda f: isinstance(f, ipc.Transcript) and f.text == "How can I help?")
    await _stop(pipeline, task)
    pieces = [f.text for f in h.log if isinstance(f, ipc.Transcript) and f.role == "agent"]
    assert pieces[0] == "Hello,"
    assert " ".join(pieces) == LONG_GREETING


async def test_barge_in_interrupts_agent(resources: PipelineResources) -> None:
    # Marks are never acknowledged: the greeting is still "playing" when the caller talks.
    h, pipeline, task = await _start(resources, ipc.CallSettings(), LONG_GREETING, ack=False)
    await h.until(lambda f: isinstance(f, ipc.AudioOut))
    phrase = read_mulaw_wav(AUDIO / "opening_hours_saturday.wav") + b"\xff" * 8000
    await _feed(pipeline, phrase, batch=1)
    await h.until(lambda f: isinstance(f, ipc.Interrupt))
    started = next(f for f in h.log if isinstance(f, ipc.SpeechStarted))
    assert started.at < 0.5
    final = await h.until(caller_final)
    assert "opening hours" in final.text.lower()
    reply = await h.until(lambda f: isinstance(f, ipc.AgentSay))
    assert reply.text == "We open at eight and close at six."
    await _stop(pipeline, task)


async def test_barge_in_off_keeps_talking(resources: PipelineResources) -> None:
    settings = ipc.CallSettings(barge_in=False)
    h, pipeline, task = await _start(resources, settings, LONG_GREETING, ack=False)
    await h.until(lambda f: isinstance(f, ipc.AudioOut))
    phrase = read_mulaw_wav(AUDIO / "opening_hours_saturday.wav") + b"\xff" * 8000
    await _feed(pipeline, phrase, batch=1)
    await h.until(lambda f: isinstance(f, ipc.SpeechEnded))
    await _stop(pipeline, task)
    assert not any(isinstance(f, ipc.Interrupt) for f in h.log)
    assert not any(isinstance(f, ipc.Transcript) and f.final and f.role == "caller" for f in h.log)


async def test_audio_queue_is_bounded(resources: PipelineResources) -> None:
    _, pipeline, task = await _start(resources, ipc.CallSettings(), "Hi.", ack=True)
    for seq in range(1000):  # no awaits: the pipeline cannot drain meanwhile
        pipeline.feed_audio(ipc.AudioIn(call_id="c", seq=seq, ulaw=b"\xff" * 160))
    assert pipeline.audio_dropped == 750
    await _stop(pipeline, task)
