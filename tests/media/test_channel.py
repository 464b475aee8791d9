from __future__ import annotations

import asyncio

import pytest

from voxgate.media.call import Call, CallState, EndReason
from voxgate.media.channel import (
    ChannelClosed,
    ChannelClosedError,
    ChannelEvent,
    FrameClock,
    InboundAudio,
    MarkReached,
    MediaChannel,
    PacedChannel,
    TransferNotSupported,
)
from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.media.frame import Frame


def make_call() -> Call:
    call = Call(
        "c1", tenant_id="t", agent_id="a", provider="sip", from_number="1", to_number="2", now=0.0
    )
    call.answer(0.0)
    return call


class RecordingChannel(PacedChannel):
    """A transport that writes into a list (marks confirmed by the far end)."""

    confirms_marks_on_write = False

    def __init__(self, clock: FrameClock, **kwargs: int) -> None:
        super().__init__(make_call(), clock, **kwargs)
        self.wire: list[tuple[str, object]] = []
        self.closed_with: EndReason | None = None

    async def _write_frame(self, ulaw: bytes) -> None:
        self.wire.append(("media", ulaw))

    async def _write_mark(self, name: str) -> None:
        self.wire.append(("mark", name))

    async def _write_clear(self) -> None:
        self.wire.append(("clear", None))

    async def _close_transport(self, reason: EndReason) -> None:
        self.closed_with = reason


class LocalPlayoutChannel(RecordingChannel):
    confirms_marks_on_write = True


def frames(n: int, byte: int = 1) -> bytes:
    return bytes([byte]) * 160 * n


async def drain(channel: PacedChannel) -> list[ChannelEvent]:
    events: list[ChannelEvent] = []
    while len(channel._inbox):
        events.append(await channel._inbox.get())
    return events


async def test_is_a_media_channel() -> None:
    assert isinstance(RecordingChannel(FrameClock()), MediaChannel)


async def test_one_frame_per_tick_and_marks_in_place() -> None:
    clock = FrameClock()
    ch = RecordingChannel(clock)
    await ch.send(frames(2, 1))
    ch.mark("m1")
    await ch.send(Frame.silence())
    assert clock.active_channels == 1
    for _ in range(4):
        await clock.tick()
    assert [kind for kind, _ in ch.wire] == ["media", "media", "mark", "media"]
    assert ch.wire[3][1] == b"\xff" * 160
    assert clock.active_channels == 0  # idle channels are not visited
    ch.deliver_mark_echo("m1")
    assert await drain(ch) == [MarkReached("m1", played=True)]


async def test_local_playout_confirms_marks_on_write() -> None:
    clock = FrameClock()
    ch = LocalPlayoutChannel(clock)
    await ch.send(frames(1))
    ch.mark("end")
    await clock.tick()
    await clock.tick()
    assert await drain(ch) == [MarkReached("end", played=True)]


async def test_clear_sends_clear_only_when_audio_pending() -> None:
    clock = FrameClock()
    ch = RecordingChannel(clock)
    assert ch.clear() == []
    await clock.tick()
    assert ch.wire == []  # nothing pending: no clear on the wire
    await ch.send(frames(5))
    ch.mark("sentence-1")
    await clock.tick()
    assert ch.clear() == ["sentence-1"]
    await clock.tick()
    assert ch.wire == [("media", frames(1)), ("clear", None)]
    assert await drain(ch) == [MarkReached("sentence-1", played=False)]
    # Twilio echoes cleared marks; that is not a "reached".
    ch.deliver_mark_echo("sentence-1")
    assert await drain(ch) == []


async def test_inbound_events_in_order_and_close_ends_iteration() -> None:
    ch = RecordingChannel(FrameClock())
    ch.deliver_audio(frames(1, 7))
    ch.deliver_dtmf(DtmfEvent("5", 0.1, DtmfSource.RFC4733))
    ch.deliver_closed(EndReason.CALLER_HANGUP)
    ch.deliver_audio(frames(1))  # after close: ignored
    seen = [event async for event in ch.events()]
    assert isinstance(seen[0], InboundAudio) and seen[0].frame.pcm.shape == (160,)
    assert seen[1:] == [
        DtmfEvent("5", 0.1, DtmfSource.RFC4733),
        ChannelClosed(EndReason.CALLER_HANGUP),
    ]
    assert ch.call.state is CallState.ENDED
    assert ch.call.end_reason is EndReason.CALLER_HANGUP
    with pytest.raises(ChannelClosedError):
        await ch.send(frames(1))


async def test_inbox_bounded_drops_oldest_audio() -> None:
    ch = RecordingChannel(FrameClock(), inbox_limit=5)
    for i in range(8):
        ch.deliver_audio(frames(1, i))
    ch.deliver_closed(EndReason.ERROR)
    events = await drain(ch)
    assert ch.inbound_dropped == 4
    assert [e.payload[0] for e in events if isinstance(e, InboundAudio)] == [4, 5, 6, 7]
    assert events[-1] == ChannelClosed(EndReason.ERROR)


async def test_send_waits_for_room_then_proceeds() -> None:
    clock = FrameClock()
    ch = RecordingChannel(clock, max_outbound_frames=3)
    await ch.send(frames(3))
    blocked = asyncio.ensure_future(ch.send(frames(2)))
    await asyncio.sleep(0)
    assert not blocked.done()
    await clock.tick()
    await asyncio.sleep(0)
    assert not blocked.done()  # one free slot, needs two
    await clock.tick()
    await asyncio.wait_for(blocked, 1)
    assert len(ch.outbound) == 3


async def test_oversized_send_raises_instead_of_waiting_forever() -> None:
    ch = RecordingChannel(FrameClock(), max_outbound_frames=3)
    with pytest.raises(Exception, match="do not fit"):
        await ch.send(frames(4))


async def test_hangup_closes_transport_and_call() -> None:
    ch = RecordingChannel(FrameClock())
    await ch.send(frames(2))
    ch.mark("never")
    await ch.hangup(EndReason.AGENT_HANGUP)
    assert ch.closed_with is EndReason.AGENT_HANGUP
    assert ch.call.state is CallState.ENDED and ch.call.end_reason is EndReason.AGENT_HANGUP
    assert await drain(ch) == [
        MarkReached("never", played=False),
        ChannelClosed(EndReason.AGENT_HANGUP),
    ]
    await ch.hangup()  # idempotent
    with pytest.raises(TransferNotSupported):
        await ch.transfer("sip:x@y")


async def test_broken_transport_ends_only_that_call() -> None:
    class Broken(RecordingChannel):
        async def _write_frame(self, ulaw: bytes) -> None:
            raise ConnectionResetError

    clock = FrameClock()
    bad, good = Broken(clock), RecordingChannel(clock)
    await bad.send(frames(2))
    await good.send(frames(2))
    await clock.tick()
    assert bad.closed and not good.closed
    assert good.wire == [("media", frames(1))]
    await clock.tick()
    assert len(good.wire) == 2


async def test_clock_run_paces_in_real_time() -> None:
    clock = FrameClock()
    ch = LocalPlayoutChannel(clock)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(clock.run())
    try:
        await asyncio.sleep(0)
        start = loop.time()
        await ch.send(frames(10))
        ch.mark("done")
        async for event in ch.events():
            if isinstance(event, MarkReached):
                break
        elapsed = loop.time() - start
    finally:
        task.cancel()
    assert [k for k, _ in ch.wire].count("media") == 10 and ch.wire[-1] == ("mark", "done")
    # 10 frames at 20 ms: sent over ~180-200 ms, never dumped at once.
    assert 0.17 <= elapsed < 0.5
    assert clock.pacer is not None and clock.pacer.stats.resyncs == 0


class NoWaitChannel(LocalPlayoutChannel):
    """Writes that never wait: the clock must use the synchronous path only."""

    writes_without_waiting = True

    async def _write_frame(self, ulaw: bytes) -> None:
        raise AssertionError("the clock awaited a coroutine write")

    async def _write_mark(self, name: str) -> None:
        raise AssertionError("the clock awaited a coroutine mark")

    def _write_frame_now(self, ulaw: bytes) -> None:
        self.wire.append(("media", ulaw))

    def _write_mark_now(self, name: str) -> None:
        self.wire.append(("mark", name))


async def test_clock_uses_synchronous_writes_when_they_never_wait() -> None:
    clock = FrameClock()
    ch = NoWaitChannel(clock)
    await ch.send(frames(2, 7))
    ch.mark("end")
    await clock.tick()
    assert ch.wire == [("media", frames(1, 7))] and clock.active_channels == 1
    await clock.tick(frames_due=2)
    assert ch.wire[1:] == [("media", frames(1, 7)), ("mark", "end")]
    assert await drain(ch) == [MarkReached("end", played=True)]
    assert clock.active_channels == 0 and ch.frames_out == 2


async def test_synchronous_write_error_closes_only_that_channel() -> None:
    class Broken(NoWaitChannel):
        def _write_frame_now(self, ulaw: bytes) -> None:
            raise OSError("socket gone")

    clock = FrameClock()
    bad, good = Broken(clock), NoWaitChannel(clock)
    await bad.send(frames(1))
    await good.send(frames(1))
    await clock.tick()
    assert bad.closed and not good.closed and good.wire == [("media", frames(1))]


async def test_phased_clock_writes_each_group_on_its_own_sub_tick() -> None:
    clock = FrameClock(phases=4)
    channels = [RecordingChannel(clock) for _ in range(8)]
    for ch in channels:
        await ch.send(frames(3))
    written: list[list[int]] = []
    for _ in range(12):  # three 20 ms periods of four sub-ticks
        before = [len(ch.wire) for ch in channels]
        await clock.tick()
        written.append([i for i, ch in enumerate(channels) if len(ch.wire) > before[i]])
    # Round-robin groups of two; every channel writes once per period, 20 ms apart.
    assert written[:4] == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert written[4:8] == written[:4] and written[8:] == written[:4]
    assert all(len(ch.wire) == 3 for ch in channels)
    assert clock.active_channels == 0


async def test_phased_clock_keeps_a_channels_group_across_idle_spells() -> None:
    clock = FrameClock(phases=4)
    first, second = RecordingChannel(clock), RecordingChannel(clock)
    await first.send(frames(1))
    await second.send(frames(1))
    for _ in range(4):
        await clock.tick()
    assert clock.active_channels == 0
    await second.send(frames(1))  # idle for a while, then audio again
    ticks = 0
    while len(second.wire) < 2:
        await clock.tick()
        ticks += 1
    assert clock._slot % 4 == 2  # still group 1: written on the sub-tick after group 0's
    assert ticks <= 4
    # A late loop owes several sub-ticks: each group gets one frame per sub-tick owed.
    for ch in (first, second):
        await ch.send(frames(2))
    await clock.tick(4)
    assert (len(first.wire), len(second.wire)) == (2, 3)


async def test_phased_clock_rejects_zero_phases() -> None:
    with pytest.raises(ValueError):
        FrameClock(phases=0)


async def test_wait_closed_returns_once_the_channel_closes() -> None:
    ch = RecordingChannel(FrameClock())
    waiter = asyncio.create_task(ch.wait_closed())
    await asyncio.sleep(0)
    assert not waiter.done()
    ch.deliver_closed(EndReason.CALLER_HANGUP)
    await waiter
    await ch.wait_closed()  # already closed: at once
