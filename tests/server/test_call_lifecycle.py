"""The call lifecycle every transport drives: a fake transport and agents, real Redis records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from voxgate.media.call import Call, CallEvent, EndReason
from voxgate.media.channel import ChannelClosed, FrameClock, MediaChannel, PacedChannel
from voxgate.server.agent_host import AgentHost
from voxgate.server.call_control import CallControl, CallMetrics, CallRuntime, MeasuredFrameClock
from voxgate.server.call_lifecycle import CallLifecycle
from voxgate.tenants.calls import CallDetail, CallRecord, CallRecords
from voxgate.tenants.models import Quotas
from voxgate.tenants.store import Store

TENANT = "t_test000001"
CALL_ID = "CA0001"


class FakeChannel(PacedChannel):
    """A transport-less channel: remembers how it was closed."""

    def __init__(self, call: Call, clock: FrameClock | None = None) -> None:
        super().__init__(call, clock or FrameClock())
        self.transport_closed: list[EndReason] = []

    async def _write_frame(self, ulaw: bytes) -> None:
        return None

    async def _write_mark(self, name: str) -> None:
        return None

    async def _write_clear(self) -> None:
        return None

    async def _close_transport(self, reason: EndReason) -> None:
        self.transport_closed.append(reason)


class FakeTransport:
    """A ``CallTransport`` the test drives: ``gone`` ends ``serve`` like a lost socket."""

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel
        self.gone = asyncio.Event()
        self.serving = asyncio.Event()
        self.serve_cancelled = False
        self.aborted = 0
        self.closed = 0
        self.release_close = asyncio.Event()
        self.release_close.set()

    async def serve(self) -> None:
        self.serving.set()
        try:
            await self.gone.wait()
        except asyncio.CancelledError:
            self.serve_cancelled = True
            raise

    def abort(self) -> None:
        self.aborted += 1  # leaves the channel open: the lifecycle closes it with ERROR

    async def close(self) -> list[CallEvent]:
        await self.release_close.wait()
        self.closed += 1
        return [CallEvent(time.time(), "transport_stats", "fake")]

    def caller_hangs_up(self) -> None:
        self.channel.deliver_closed(EndReason.CALLER_HANGUP)


class ListeningAgent:
    """Listens until the call closes (like the echo agent)."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, channel: MediaChannel) -> None:
        self.started.set()
        async for event in channel.events():
            if isinstance(event, ChannelClosed):
                return


class HangingUpAgent:
    async def run(self, channel: MediaChannel) -> None:
        await channel.hangup(EndReason.AGENT_HANGUP)


class ReturningAgent:
    """Returns without hanging up."""

    async def run(self, channel: MediaChannel) -> None:
        return None


class RaisingAgent:
    async def run(self, channel: MediaChannel) -> None:
        raise RuntimeError("agent bug")


class StubbornAgent:
    """Ignores the call's end; only cancellation stops it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def run(self, channel: MediaChannel) -> None:
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


@pytest.fixture
async def down_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store whose Redis is not there (nothing listens on its socket)."""
    client = aioredis.Redis(
        unix_socket_path=str(tmp_path / "nobody.sock"), retry=Retry(NoBackoff(), 0)
    )
    opened = Store(client, embedded=None, ping_interval=1.0, backoff_initial=0.05, backoff_max=1.0)
    try:
        yield opened
    finally:
        await opened.close()


def make_runtime(store: Store) -> CallRuntime:
    return CallRuntime(
        control=CallControl(),
        clock=MeasuredFrameClock(),
        agents=AgentHost(),
        records=CallRecords(store),
        metrics=CallMetrics(CollectorRegistry()),
    )


def answered_call(call_id: str = CALL_ID) -> Call:
    call = Call(
        call_id,
        tenant_id=TENANT,
        agent_id="ag_1",
        provider="webrtc",
        from_number="+15550100000",
        to_number="+15550109999",
        now=1000.0,
    )
    call.answer(1001.0)
    return call


class Setup:
    def __init__(self, store: Store, *, stop_timeout: float = 2.0) -> None:
        self.runtime = make_runtime(store)
        self.runtime.control.admit(TENANT, "ag_1", "webrtc", CALL_ID, Quotas())
        self.channel = FakeChannel(answered_call())
        self.transport = FakeTransport(self.channel)
        self.lifecycle = CallLifecycle(self.runtime, agent_stop_timeout=stop_timeout)

    async def detail(self) -> CallDetail:
        return await self.runtime.records.detail(TENANT, CALL_ID)

    @property
    def released(self) -> bool:
        return self.runtime.control.get(CALL_ID) is None and len(self.runtime.control) == 0


async def test_caller_hangup_completes_the_record_and_releases(store: Store) -> None:
    s = Setup(store)
    agent = ListeningAgent()
    task = asyncio.create_task(s.lifecycle.run(s.channel, agent, s.transport))
    await agent.started.wait()
    live = s.runtime.control.get(CALL_ID)
    assert live is not None and live.channel is s.channel  # attached while it runs
    assert (await s.detail()).call.status == "in_progress"
    s.transport.caller_hangs_up()
    await task
    detail = await s.detail()
    call = detail.call
    assert (call.status, call.end_reason, call.provider) == ("completed", "caller_hangup", "webrtc")
    assert (call.created_at, call.started_at, call.direction) == (1000.0, 1001.0, "inbound")
    assert call.ended_at is not None and call.duration == call.ended_at - 1001.0
    assert (call.recording, call.recording_path) == (False, None)
    kinds = [e.kind for e in detail.events]
    assert kinds == ["ringing", "connected", "ended", "transport_stats"]
    assert s.transport.serve_cancelled and s.transport.closed == 1 and s.transport.aborted == 0
    assert s.channel.transport_closed == []  # the caller closed it, not us
    assert s.released and not s.runtime.endings


async def test_agent_hangup(store: Store) -> None:
    s = Setup(store)
    await s.lifecycle.run(s.channel, HangingUpAgent(), s.transport)
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("completed", "agent_hangup")
    assert s.channel.transport_closed == [EndReason.AGENT_HANGUP]
    assert s.released


async def test_agent_returning_without_hangup_is_hung_up_for(store: Store) -> None:
    s = Setup(store)
    await s.lifecycle.run(s.channel, ReturningAgent(), s.transport)
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("completed", "agent_hangup")
    assert s.channel.transport_closed == [EndReason.AGENT_HANGUP]
    assert s.released


async def test_agent_that_raises_ends_the_call_as_an_error(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    s = Setup(store)
    await s.lifecycle.run(s.channel, RaisingAgent(), s.transport)  # never propagates
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("failed", "error")
    assert s.channel.transport_closed == [EndReason.ERROR]
    assert "agent bug" in caplog.text
    assert s.released


async def test_agent_lookup_that_fails_still_ends_and_releases(store: Store) -> None:
    s = Setup(store)

    async def lookup() -> ListeningAgent:
        raise LookupError("no such agent")

    await s.lifecycle.run(s.channel, lookup(), s.transport)
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("failed", "error")
    assert s.transport.aborted == 1 and s.transport.closed == 1
    assert s.released


async def test_transport_gone_first_aborts_with_error(store: Store) -> None:
    s = Setup(store)
    agent = ListeningAgent()
    task = asyncio.create_task(s.lifecycle.run(s.channel, agent, s.transport))
    await s.transport.serving.wait()
    s.transport.gone.set()  # socket lost, nobody closed the channel
    await task
    assert s.transport.aborted == 1
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("failed", "error")
    assert s.released


async def test_agent_ignoring_the_end_is_cancelled_after_the_timeout(store: Store) -> None:
    s = Setup(store, stop_timeout=0.01)
    agent = StubbornAgent()
    task = asyncio.create_task(s.lifecycle.run(s.channel, agent, s.transport))
    await agent.started.wait()
    s.transport.caller_hangs_up()
    await task
    assert agent.cancelled
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("completed", "caller_hangup")
    assert s.released


async def test_driving_task_cancelled_mid_call_still_ends_and_releases(store: Store) -> None:
    s = Setup(store)
    agent = ListeningAgent()
    s.transport.release_close.clear()  # hold the ending until the driver is gone
    task = asyncio.create_task(s.lifecycle.run(s.channel, agent, s.transport))
    await agent.started.wait()
    task.cancel()  # e.g. aiohttp cancelling the handler of a disconnected peer
    with pytest.raises(asyncio.CancelledError):
        await task
    assert s.channel.closed and s.transport.aborted == 1
    (ending,) = s.runtime.endings
    assert not ending.done() and s.runtime.control.get(CALL_ID) is not None
    s.transport.release_close.set()
    await ending
    call = (await s.detail()).call
    assert (call.status, call.end_reason) == ("failed", "error")
    assert s.transport.serve_cancelled and s.transport.closed == 1
    assert s.released and not s.runtime.endings


async def test_precreated_record_is_updated_not_replaced(store: Store) -> None:
    s = Setup(store)
    await s.runtime.records.create(
        CallRecord(
            id=CALL_ID,
            tenant_id=TENANT,
            agent_id="ag_1",
            provider="sip",
            from_number="+15550100000",
            to_number="+15550109999",
            status="ringing",
            direction="outbound",
            created_at=990.0,
        )
    )
    await s.lifecycle.run(s.channel, HangingUpAgent(), s.transport, direction="outbound")
    call = (await s.detail()).call
    assert (call.created_at, call.direction, call.started_at) == (990.0, "outbound", 1001.0)
    assert call.status == "completed"


async def test_store_unavailable_call_still_ends_and_is_released(
    down_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    s = Setup(down_store)
    agent = ListeningAgent()
    task = asyncio.create_task(s.lifecycle.run(s.channel, agent, s.transport))
    await agent.started.wait()  # the start record failed; the call went on
    s.transport.caller_hangs_up()
    await task
    assert s.transport.closed == 1
    assert s.released
    assert "start record not written" in caplog.text
    assert "end record not written" in caplog.text
