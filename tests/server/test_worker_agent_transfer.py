"""Transfers asked by a speech worker: the orchestrator is called after the words, failures
go back to the worker as TransferResult and its fallback runs (fake worker, paced channel)."""

from __future__ import annotations

import asyncio

from tests.server.test_worker_agent import RecordingChannel, WatchedSink, _pump_until, sup
from voxgate.agents import ipc
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock
from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.server.supervisor import Supervisor
from voxgate.server.worker_agent import CallTransfer, FlowWorkerAgent, TransferError
from voxgate.tenants.models import Quotas

__all__ = ["sup"]


class Transfers:
    def __init__(self, fail: TransferError | None = None) -> None:
        self.asked: list[str] = []
        self.fail = fail

    async def __call__(self, target: str) -> str:
        self.asked.append(target)
        if self.fail is not None:
            raise self.fail
        return "+15550100222"


def _setup(
    sup: Supervisor, call_id: str, transfer: CallTransfer | None
) -> tuple[FlowWorkerAgent, RecordingChannel, FrameClock, WatchedSink]:
    clock = FrameClock()
    call = Call(
        call_id=call_id, tenant_id="ta", agent_id="a1", provider="twilio",
        from_number="+1", to_number="+2", now=0.0,
    )  # fmt: skip
    call.answer(0.0)
    channel = RecordingChannel(call, clock)
    sink = WatchedSink()
    start = ipc.StartCall(call_id=call_id, tenant_id="ta", agent_id="a1", flow={})

    async def quotas() -> Quotas:
        return Quotas()

    return FlowWorkerAgent(sup, start, quotas, sink, transfer=transfer), channel, clock, sink


async def _greeted(channel: RecordingChannel, clock: FrameClock, sink: WatchedSink) -> None:
    await sink.wait_for("agent_say")
    async with asyncio.timeout(10):
        while not any(t.get("heard") for t in sink.turns):
            await clock.tick()
            await asyncio.sleep(0.005)


async def test_transfer_after_the_words_then_the_call_leaves(sup: Supervisor) -> None:
    transfers = Transfers()
    agent, channel, clock, sink = _setup(sup, "x1", transfers)
    task = asyncio.create_task(agent.run(channel))
    await _greeted(channel, clock, sink)
    channel.deliver_dtmf(DtmfEvent("*", 0.1, DtmfSource.TWILIO))  # fake worker: Transfer
    await _pump_until(clock, task)
    assert transfers.asked == ["operator"]
    assert channel.closed_with is EndReason.TRANSFER and agent.end_reason is EndReason.TRANSFER
    assert ("transfer_requested", "operator") in sink.events
    assert ("transferred", "+15550100222") in sink.events


async def test_refused_transfer_runs_the_workers_fallback(sup: Supervisor) -> None:
    transfers = Transfers(TransferError("dial_refused", "premium-rate destinations are blocked"))
    agent, channel, clock, sink = _setup(sup, "x2", transfers)
    task = asyncio.create_task(agent.run(channel))
    await _greeted(channel, clock, sink)
    frames_before = len(channel.frames)
    channel.deliver_dtmf(DtmfEvent("8", 0.1, DtmfSource.TWILIO))  # fake worker: premium
    await _pump_until(clock, task)
    assert transfers.asked == ["+19005550199"]
    kinds = [k for k, _ in sink.events]
    assert ("transfer_failed", "dial_refused: premium-rate destinations are blocked") in (
        sink.events
    )
    # The worker heard TransferResult(ok=False): it said sorry (played in full), then hung up.
    assert kinds.index("transfer_failed") < kinds.index("hangup")
    assert ("hangup", "transfer_failed") in sink.events
    assert len(channel.frames) - frames_before == 25
    assert channel.closed_with is EndReason.AGENT_HANGUP


async def test_no_orchestrator_is_a_failed_transfer_not_a_dead_call(sup: Supervisor) -> None:
    agent, channel, clock, sink = _setup(sup, "x3", None)
    task = asyncio.create_task(agent.run(channel))
    await _greeted(channel, clock, sink)
    channel.deliver_dtmf(DtmfEvent("*", 0.1, DtmfSource.TWILIO))
    await _pump_until(clock, task)
    assert any(k == "transfer_failed" and d.startswith("unavailable") for k, d in sink.events)
    assert ("hangup", "transfer_failed") in sink.events
    assert channel.closed_with is EndReason.AGENT_HANGUP
