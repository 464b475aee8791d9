"""A flow's transfer node through the pipeline: Transfer after the words, fallback on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from voxgate.agents import ipc
from voxgate.agents.flowspec import parse_flow
from voxgate.agents.pipeline import CallPipeline, PipelineResources
from voxgate.agents.stt import SpeechRecognizer
from voxgate.agents.tts import SpeechSynthesizer
from voxgate.agents.vad import VadPool

FLOW: dict[str, Any] = {
    "schema": "flowspec/1",
    "id": "xfer",
    "locale": "en-US",
    "slots": [],
    "intents": [],
    "entities": [],
    "globals": [],
    "layout": {},
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "out", "type": "transfer", "target": "operator", "text": "Putting you through."},
    ],
    "edges": [{"id": "e1", "source": "start", "port": "next", "target": "out"}],
}


@pytest.fixture(scope="module")
def resources() -> Iterator[PipelineResources]:
    res = PipelineResources(
        stt=SpeechRecognizer(),
        tts=SpeechSynthesizer(),
        vad_pool=VadPool(),
        inference=ThreadPoolExecutor(2),
        realtime=ThreadPoolExecutor(1),
    )
    yield res
    res.close()


async def _run(
    resources: PipelineResources, settings: ipc.CallSettings, ok: bool
) -> list[ipc.Frame]:
    sent: asyncio.Queue[ipc.Frame] = asyncio.Queue()
    log: list[ipc.Frame] = []

    async def send(frame: ipc.Frame) -> None:
        log.append(frame)
        await sent.put(frame)

    start = ipc.StartCall(call_id="c", tenant_id="t", agent_id="a", flow=FLOW, settings=settings)
    pipeline = CallPipeline(start, resources, send, flow=parse_flow(FLOW)[0])
    task = asyncio.get_running_loop().create_task(pipeline.run())
    try:
        async with asyncio.timeout(60):
            while not isinstance(await sent.get(), ipc.Transfer):
                pass
            pipeline.on_transfer_result(ok, "" if ok else "dial_refused")
            if not ok:
                while not isinstance(await sent.get(), ipc.Hangup):
                    pass
            else:
                await asyncio.sleep(0)  # nothing may follow a successful transfer
    finally:
        pipeline.end("test")
        await asyncio.wait_for(task, 30)
    return log


async def test_failed_transfer_apologises_then_hangs_up(resources: PipelineResources) -> None:
    log = await _run(resources, ipc.CallSettings(), ok=False)
    kinds = [type(f).__name__ for f in log]
    transfer = kinds.index("Transfer")
    assert log[transfer] == ipc.Transfer(call_id="c", target="operator")
    # The transfer words were sent before the Transfer frame, the apology after it.
    says = [f for f in log if isinstance(f, ipc.AgentSay)]
    assert [s.text for s in says] == ["Putting you through.", ipc.DEFAULT_TRANSFER_FAILED_TEXT]
    assert log.index(says[0]) < transfer < log.index(says[1])
    audio_after = [f for f in log[transfer:] if isinstance(f, ipc.AudioOut)]
    assert audio_after, "the apology is spoken"
    hangup = log[-1]
    assert isinstance(hangup, ipc.Hangup) and hangup.reason == "transfer_failed"


async def test_successful_transfer_says_nothing_more(resources: PipelineResources) -> None:
    log = await _run(resources, ipc.CallSettings(transfer_failed_text=""), ok=True)
    after = log[[type(f) for f in log].index(ipc.Transfer) + 1 :]
    assert not any(isinstance(f, ipc.AgentSay | ipc.Hangup) for f in after)


async def test_empty_fallback_text_hangs_up_at_once(resources: PipelineResources) -> None:
    log = await _run(resources, ipc.CallSettings(transfer_failed_text=""), ok=False)
    transfer = [type(f) for f in log].index(ipc.Transfer)
    after = log[transfer + 1 :]
    assert not any(isinstance(f, ipc.AgentSay) for f in after)
    assert isinstance(after[-1], ipc.Hangup)
