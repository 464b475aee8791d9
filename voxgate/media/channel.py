"""The one interface between a call's transport and whatever talks on it.

``MediaChannel`` is what Twilio Media Streams, SIP/RTP and WebRTC transports
offer, and the only thing an agent (``CallAgent``) sees: inbound events
(20 ms caller audio, DTMF, marks reached, close), outbound audio, marks,
``clear`` (barge-in), hangup and optional transfer.

``PacedChannel`` is the shared implementation transports subclass: a bounded
inbox, a bounded ``OutboundQueue`` and mark bookkeeping. It does not own a
timer; a ``FrameClock`` (one per process) ticks every 20 ms and pumps every
channel with audio waiting, so 300 calls cost 50 wake-ups a second, not
15000. Subclasses provide the four ``_write_*``/``_close_transport`` hooks.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from voxgate.media.call import Call, CallTrigger, EndReason
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.frame import FRAME_BYTES_ULAW, Frame
from voxgate.media.outqueue import OutboundQueue, OutboundQueueFull
from voxgate.media.pacer import Pacer

__all__ = [
    "CallAgent",
    "ChannelClosed",
    "ChannelClosedError",
    "ChannelError",
    "ChannelEvent",
    "FrameClock",
    "InboundAudio",
    "MarkReached",
    "MediaChannel",
    "PacedChannel",
    "TransferNotSupported",
]


class ChannelError(Exception):
    """Base of media channel errors."""


class ChannelClosedError(ChannelError):
    """The call's transport is closed; nothing more can be sent."""


class TransferNotSupported(ChannelError):
    """This transport cannot transfer calls."""


class InboundAudio:
    """20 ms of caller audio as 160 bytes of 8 kHz µ-law.

    ``synthetic`` marks silence the media core inserted for a gap in the
    transport's stream. ``frame`` decodes on first use: the echo path never
    needs PCM, speech does.
    """

    __slots__ = ("_frame", "payload", "synthetic")

    def __init__(self, payload: bytes, synthetic: bool = False) -> None:
        self.payload = payload
        self.synthetic = synthetic
        self._frame: Frame | None = None

    @property
    def frame(self) -> Frame:
        if self._frame is None:
            self._frame = Frame.from_ulaw(self.payload)
        return self._frame

    def __repr__(self) -> str:
        return f"InboundAudio({len(self.payload)} B{', synthetic' if self.synthetic else ''})"


class MarkReached(msgspec.Struct, frozen=True):
    """A mark the agent placed: ``played`` True if the caller heard everything
    before it, False if it was dropped by ``clear``/hangup."""

    name: str
    played: bool


class ChannelClosed(msgspec.Struct, frozen=True):
    """Last event of a channel."""

    reason: EndReason


ChannelEvent = InboundAudio | DtmfEvent | MarkReached | ChannelClosed


@runtime_checkable
class MediaChannel(Protocol):
    """A live call's media, as an agent sees it."""

    @property
    def call(self) -> Call: ...

    @property
    def closed(self) -> bool: ...

    def events(self) -> AsyncIterator[ChannelEvent]:
        """Inbound events in order; ends after ``ChannelClosed``."""
        ...

    async def send(self, audio: bytes | Frame) -> None:
        """Queue 8 kHz µ-law bytes (or a Frame) for paced playout; waits for room."""
        ...

    def mark(self, name: str) -> None:
        """Place a named mark after the audio sent so far."""
        ...

    def clear(self) -> list[str]:
        """Barge-in: drop unplayed audio; returns marks that will not be reached."""
        ...

    @property
    def has_pending_audio(self) -> bool:
        """True while the caller may still hear audio already sent."""
        ...

    async def hangup(self, reason: EndReason = EndReason.AGENT_HANGUP) -> None: ...

    async def transfer(self, target: str) -> None:
        """Hand the call to ``target``; raises ``TransferNotSupported`` if impossible."""
        ...


class CallAgent(Protocol):
    """Something that talks on a call, through its ``MediaChannel`` only."""

    async def run(self, channel: MediaChannel) -> None: ...


class _Inbox:
    """Bounded event queue for one reader; drops the oldest audio when full.

    Dropping old caller audio beats blocking the transport (which would stall
    every other call on the loop) or growing without bound.
    """

    __slots__ = ("_items", "_limit", "_waiter", "dropped")

    def __init__(self, limit: int) -> None:
        self._items: deque[ChannelEvent] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = 0

    def put(self, event: ChannelEvent) -> None:
        items = self._items
        if len(items) >= self._limit:
            for index, queued in enumerate(items):
                if isinstance(queued, InboundAudio):
                    del items[index]
                    self.dropped += 1
                    break
            else:
                if not isinstance(event, ChannelClosed):
                    self.dropped += 1
                    return
        items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> ChannelEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class PacedChannel(abc.ABC):
    """Shared ``MediaChannel`` implementation for transports.

    The transport feeds inbound happenings with ``deliver_audio``,
    ``deliver_dtmf``, ``deliver_mark_echo`` and ``deliver_closed``; a
    ``FrameClock`` pumps outbound audio into the ``_write_*`` hooks.
    """

    #: True when the transport plays audio itself as it is written (RTP), so a
    #: mark is reached as soon as it is written; False when the far end
    #: confirms marks (Twilio echoes them).
    confirms_marks_on_write: ClassVar[bool] = True

    #: True when the transport's writes never wait (a UDP ``sendto``): the
    #: clock then calls :meth:`pump_now`, which costs no coroutine per call
    #: and frame — at a few hundred calls that is most of a tick's overhead.
    #: Such subclasses implement ``_write_frame_now``/``_write_mark_now``.
    writes_without_waiting: ClassVar[bool] = False

    def __init__(
        self,
        call: Call,
        clock: FrameClock,
        *,
        inbox_limit: int = 250,
        max_outbound_frames: int = 1500,
    ) -> None:
        self._call = call
        self._clock = clock
        self._inbox = _Inbox(inbox_limit)
        self.outbound = OutboundQueue(max_frames=max_outbound_frames)
        self._closed = False
        self._room: asyncio.Event | None = None
        self._closed_event: asyncio.Event | None = None  # made by the first wait_closed()
        self.frames_in = 0
        self.frames_out = 0

    # -- MediaChannel ------------------------------------------------------
    @property
    def call(self) -> Call:
        return self._call

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        """Return once the channel has closed (for the call's lifecycle, not agents)."""
        if self._closed:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
        await self._closed_event.wait()

    async def events(self) -> AsyncIterator[ChannelEvent]:
        while True:
            event = await self._inbox.get()
            yield event
            if isinstance(event, ChannelClosed):
                return

    async def send(self, audio: bytes | Frame) -> None:
        data = audio.to_ulaw() if isinstance(audio, Frame) else audio
        while True:
            if self._closed:
                raise ChannelClosedError(f"call {self._call.call_id} is closed")
            try:
                self.outbound.push(data)
            except OutboundQueueFull:
                if len(data) // FRAME_BYTES_ULAW > self.outbound.capacity:
                    raise
                # Backpressure: wait until the clock has played some out.
                if self._room is None:
                    self._room = asyncio.Event()
                self._room.clear()
                await self._room.wait()
                continue
            self._clock.activate(self)
            return

    def mark(self, name: str) -> None:
        if self._closed:
            raise ChannelClosedError(f"call {self._call.call_id} is closed")
        self.outbound.push_mark(name)
        self._clock.activate(self)

    def clear(self) -> list[str]:
        had_audio = self.outbound.has_pending_audio
        result = self.outbound.flush()
        if had_audio and not self._closed:
            # Only tell the far end when it may be holding audio: a clear on
            # silence is wasted work on both sides.
            self._schedule_clear()
        for name in result.dropped_marks:
            self._inbox.put(MarkReached(name, played=False))
        return result.dropped_marks

    @property
    def has_pending_audio(self) -> bool:
        return self.outbound.has_pending_audio

    async def hangup(self, reason: EndReason = EndReason.AGENT_HANGUP) -> None:
        if self._closed:
            return
        if self._call.can(CallTrigger.HANGUP):
            self._call.hangup(reason, time.time())
        await self._close_transport(reason)
        self.deliver_closed(reason)

    async def transfer(self, target: str) -> None:
        raise TransferNotSupported(f"{type(self).__name__} cannot transfer")

    # -- transport side ----------------------------------------------------
    def deliver_audio(self, payload: bytes, synthetic: bool = False) -> None:
        """Inbound 160-byte µ-law frame from the transport."""
        if self._closed:
            return
        self.frames_in += 1
        self._inbox.put(InboundAudio(payload, synthetic))

    def deliver_dtmf(self, event: DtmfEvent) -> None:
        if not self._closed:
            self._inbox.put(event)

    def deliver_mark_echo(self, name: str) -> None:
        """The far end reports a mark reached (a clear's echo is ignored)."""
        if self.outbound.mark_played(name):
            self._inbox.put(MarkReached(name, played=True))

    def deliver_closed(self, reason: EndReason) -> None:
        """The transport ended; drops pending audio and ends ``events()``."""
        if self._closed:
            return
        self._closed = True
        self._clock.deactivate(self)
        if self._call.can(CallTrigger.CLOSED):
            self._call.closed(time.time(), reason)
        for name in self.outbound.flush().dropped_marks:
            self._inbox.put(MarkReached(name, played=False))
        self._inbox.put(ChannelClosed(reason))
        if self._room is not None:
            self._room.set()
        if self._closed_event is not None:
            self._closed_event.set()

    @property
    def inbound_dropped(self) -> int:
        return self._inbox.dropped

    async def pump(self, frames_due: int) -> bool:
        """Write up to ``frames_due`` frames (and marks on the way); False when idle."""
        queue = self.outbound
        for _ in range(frames_due):
            frame, marks = queue.pop_frame()
            for mark in marks:
                await self._write_mark(mark.name)
                if self.confirms_marks_on_write:
                    self.deliver_mark_echo(mark.name)
            if frame is None:
                break
            await self._write_frame(frame)
            self.frames_out += 1
        if self._room is not None and queue.space > 0:
            self._room.set()
        return not queue.is_empty

    def pump_now(self, frames_due: int) -> bool:
        """:meth:`pump` for transports whose writes never wait (see
        ``writes_without_waiting``); False when idle."""
        queue = self.outbound
        for _ in range(frames_due):
            frame, marks = queue.pop_frame()
            for mark in marks:
                self._write_mark_now(mark.name)
                if self.confirms_marks_on_write:
                    self.deliver_mark_echo(mark.name)
            if frame is None:
                break
            self._write_frame_now(frame)
            self.frames_out += 1
        room = self._room
        if room is not None and queue.space > 0:
            room.set()
        return not queue.is_empty

    def _write_frame_now(self, ulaw: bytes) -> None:
        """Synchronous ``_write_frame`` (only with ``writes_without_waiting``)."""
        raise NotImplementedError

    def _write_mark_now(self, name: str) -> None:
        """Synchronous ``_write_mark`` (only with ``writes_without_waiting``)."""
        raise NotImplementedError

    def _schedule_clear(self) -> None:
        self._clock.request_clear(self)

    # -- hooks -------------------------------------------------------------
    @abc.abstractmethod
    async def _write_frame(self, ulaw: bytes) -> None:
        """Send one 160-byte µ-law frame to the far end."""

    @abc.abstractmethod
    async def _write_mark(self, name: str) -> None:
        """Tell the far end about a mark (no-op for RTP)."""

    @abc.abstractmethod
    async def _write_clear(self) -> None:
        """Tell the far end to drop audio it buffered (no-op for RTP)."""

    @abc.abstractmethod
    async def _close_transport(self, reason: EndReason) -> None:
        """Hang up / close the socket."""


class FrameClock:
    """One 20 ms tick for every channel in the process.

    ``run()`` is the asyncio task; ``tick(now)`` does one tick's work and is
    what tests drive with a fake clock. Channels with nothing to send are not
    visited.

    ``phases`` > 1 spreads the channels over that many groups, each on its own
    20 ms grid offset by ``interval / phases``: the clock then ticks every
    ``interval / phases`` and a tick writes one group's frames. A channel
    keeps its group for life (its frames stay 20 ms apart). With one group,
    a tick's last frame leaves (channels times the cost of a write) after its first;
    with groups, only that group's share, which is what bounds lateness at a
    few hundred calls.
    """

    def __init__(
        self, interval: float = 0.020, *, resync_after: float = 0.060, phases: int = 1
    ) -> None:
        if phases < 1:
            raise ValueError("phases must be at least 1")
        self._interval = interval
        self._resync_after = resync_after
        self._phases = phases
        self._phase_of: dict[PacedChannel, int] = {}
        self._next_phase = 0
        self._slot = 0  # sub-slots ticked so far (phase of the next: _slot % phases)
        self._active: dict[PacedChannel, None] = {}
        self._clears: dict[PacedChannel, None] = {}
        self._wake: asyncio.Event | None = None
        self.pacer: Pacer | None = None
        self.ticks = 0

    def activate(self, channel: PacedChannel) -> None:
        self._active[channel] = None
        if self._phases > 1 and channel not in self._phase_of:
            self._phase_of[channel] = self._next_phase
            self._next_phase = (self._next_phase + 1) % self._phases
        if self._wake is not None:
            self._wake.set()

    def deactivate(self, channel: PacedChannel) -> None:
        self._active.pop(channel, None)
        self._clears.pop(channel, None)
        self._phase_of.pop(channel, None)

    def _due(self, slots: int) -> list[tuple[PacedChannel, int]]:
        """(channel, frames) to write for ``slots`` due ticks."""
        if self._phases == 1:
            return [(channel, slots) for channel in self._active]
        owed = [0] * self._phases
        for k in range(slots):
            owed[(self._slot + k) % self._phases] += 1
        self._slot += slots
        phase_of = self._phase_of
        due: list[tuple[PacedChannel, int]] = []
        for channel in self._active:
            frames = owed[phase_of.get(channel, 0)]
            if frames:
                due.append((channel, frames))
        return due

    def request_clear(self, channel: PacedChannel) -> None:
        self._clears[channel] = None
        if self._wake is not None:
            self._wake.set()

    @property
    def active_channels(self) -> int:
        return len(self._active)

    async def tick(self, frames_due: int = 1) -> None:
        """Send clears first (barge-in is urgent), then ``frames_due`` ticks of
        audio (with phases: each tick writes one frame for its group)."""
        self.ticks += 1
        if self._clears:
            clears = list(self._clears)
            self._clears.clear()
            for channel in clears:
                if not channel.closed:
                    await _guarded(channel, channel._write_clear())
        idle: list[PacedChannel] = []
        for channel, frames in self._due(frames_due):
            try:
                if channel.writes_without_waiting:
                    busy = channel.pump_now(frames)
                else:
                    busy = await channel.pump(frames)
            except (OSError, ConnectionError, ChannelError):
                # A broken transport ends that call, never the clock.
                channel.deliver_closed(EndReason.ERROR)
                busy = False
            if not busy:
                idle.append(channel)
        for channel in idle:
            self._active.pop(channel, None)

    async def run(self) -> None:
        """Tick forever (cancel to stop); sleeps while no channel has audio.

        Times come from ``time.monotonic``, not the loop clock: uvloop's is
        millisecond-coarse and frozen for a whole loop iteration, so it
        under-reports how late a tick really starts.
        """
        monotonic = time.monotonic
        self._wake = asyncio.Event()
        pacer = Pacer(
            monotonic(),
            self._interval / self._phases,
            resync_after=self._resync_after,
            # The same catch-up in time as one group: two frames' worth.
            max_catchup=2 * self._phases,
        )
        self.pacer = pacer
        while True:
            if not self._active and not self._clears:
                self._wake.clear()
                await self._wake.wait()
                pacer.restart(monotonic())
            delay = pacer.next_deadline() - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            due = pacer.poll(monotonic())
            if due:
                await self.tick(due)


async def _guarded(channel: PacedChannel, write: Coroutine[Any, Any, None]) -> None:
    try:
        await write
    except (OSError, ConnectionError, ChannelError):
        channel.deliver_closed(EndReason.ERROR)
