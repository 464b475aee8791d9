"""FlowWorkerAgent between a paced channel (fake transport, manual clock) and a fake worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.agents import ipc
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock, PacedChannel
from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.server.os_limits import detect
from voxgate.server.supervisor import Backoff, Supervisor, SupervisorConfig, WorkerCommand
from voxgate.server.worker_agent import FlowWorkerAgent, NullSink, events_channel, prompt_dir
from voxgate.tenants.models import Quotas

FAKE = Path(__file__).resolve().parent / "fake_worker.py"


class WatchedSink(NullSink):
    """NullSink that lets a test wait for an event kind."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def event(self, call_id: str, kind: str, detail: str = "") -> None:
        super().event(call_id, kind, detail)
        self.changed.set()

    async def wait_for(self, kind: str) -> None:
        async with asyncio.timeout(20):
            while not any(k == kind for k, _ in self.events):
                self.changed.clear()
                await self.changed.wait()


class RecordingChannel(PacedChannel):
    def __init__(self, call: Call, clock: FrameClock) -> None:
        super().__init__(call, clock)
        self.frames: list[bytes] = []
        self.marks: list[str] = []
        self.clears = 0
        self.closed_with: EndReason | None = None

    async def _write_frame(self, ulaw: bytes) -> None:
        self.frames.append(ulaw)

    async def _write_mark(self, name: str) -> None:
        self.marks.append(name)

    async def _write_clear(self) -> None:
        self.clears += 1

    async def _close_transport(self, reason: EndReason) -> None:
        self.closed_with = reason


@pytest.fixture
async def sup() -> AsyncIterator[Supervisor]:
    command = WorkerCommand(argv=(sys.executable, str(FAKE)), env=dict(os.environ))
    supervisor = Supervisor(detect(), SupervisorConfig(command=command, ping_interval=0.2))
    await supervisor.start(prewarm_now=True)
    try:
        yield supervisor
    finally:
        await supervisor.close()


def _setup(
    sup: Supervisor, call_id: str
) -> tuple[FlowWorkerAgent, RecordingChannel, FrameClock, WatchedSink]:
    clock = FrameClock()
    call = Call(
        call_id=call_id,
        tenant_id="ta",
        agent_id="a1",
        provider="twilio",
        from_number="+1",
        to_number="+2",
        now=0.0,
    )
    call.answer(0.0)
    channel = RecordingChannel(call, clock)
    sink = WatchedSink()
    start = ipc.StartCall(call_id=call_id, tenant_id="ta", agent_id="a1", flow={})

    async def quotas() -> Quotas:
        return Quotas()

    return FlowWorkerAgent(sup, start, quotas, sink), channel, clock, sink


async def _pump_until(clock: FrameClock, done: asyncio.Event | asyncio.Task[None]) -> None:
    async with asyncio.timeout(10):
        while not (done.done() if isinstance(done, asyncio.Task) else done.is_set()):
            await clock.tick()
            await asyncio.sleep(0.005)


async def test_audio_marks_heard_dtmf_hangup_after_audio(sup: Supervisor) -> None:
    agent, channel, clock, sink = _setup(sup, "c1")
    task = asyncio.create_task(agent.run(channel))
    await sink.wait_for("agent_say")
    async with asyncio.timeout(10):
        while not any(t.get("heard") for t in sink.turns):
            await clock.tick()
            await asyncio.sleep(0.005)
    assert len(channel.frames) == 25 and channel.marks == ["m1"]
    assert sink.turns[0] == {**sink.turns[0], "role": "agent", "text": "hello", "heard": True}
    channel.deliver_audio(b"\xff" * 160)
    channel.deliver_dtmf(DtmfEvent("#", 0.1, DtmfSource.TWILIO))  # fake worker: "#" -> Hangup
    await _pump_until(clock, task)
    assert channel.closed_with is EndReason.AGENT_HANGUP
    assert ("dtmf", "#") in sink.events and ("hangup", "bye") in sink.events


async def test_worker_death_ends_the_call_within_a_second(sup: Supervisor) -> None:
    agent, channel, _clock, sink = _setup(sup, "c2")
    task = asyncio.create_task(agent.run(channel))
    await sink.wait_for("worker")
    lease = agent.lease
    assert lease is not None
    loop = asyncio.get_running_loop()
    killed = loop.time()
    os.kill(lease.pid, signal.SIGKILL)
    async with asyncio.timeout(1.0):
        await task
    assert loop.time() - killed < 1.0
    assert channel.closed_with is EndReason.WORKER_LOST
    assert any(kind == "worker_lost" for kind, _ in sink.events)


async def test_no_worker_means_fallback_at_once() -> None:
    command = WorkerCommand(argv=(sys.executable, str(FAKE)), env=dict(os.environ))
    supervisor = Supervisor(detect(), SupervisorConfig(command=command))
    await supervisor.start()
    try:
        agent, channel, _clock, sink = _setup(supervisor, "c3")
        supervisor._tenant_backoff["ta"] = backoff = Backoff()
        backoff.failure(supervisor.clock())
        await agent.run(channel)
        assert channel.closed_with is EndReason.WORKER_LOST
        assert sink.events[0][0] == "fallback"
    finally:
        await supervisor.close()


def test_names() -> None:
    assert events_channel("t1") == "vg:{t1}:events"
    assert prompt_dir(Path("/d"), "t1") == Path("/d/blobs/t1/prompts")
