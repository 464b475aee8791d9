"""``MediaChannel`` over a WebRTC peer connection (aiortc): a browser call as an agent sees it.

Three sans-IO pieces and two thin aiortc adapters:

* :class:`InboundFramer` turns the browser's decoded audio (Opus at 48 kHz
  stereo, PCMU/PCMA at 8 kHz, any rate) into 20 ms 8 kHz µ-law frames, with a
  streaming soxr resampler, and fills silence when the audio stalls (the
  agent's endpointing and no-input timers keep moving), like the Twilio
  stream state does.
* :class:`SenderHandoff` sits between our push clock and aiortc's pull model:
  the process-wide ``FrameClock`` puts one frame per 20 ms tick in (agent
  audio, or silence when nothing is queued, so the browser's jitter buffer
  sees a steady stream), and aiortc's RTP sender takes it out through
  :meth:`ChannelAudioTrack.recv`. It holds at most ``limit`` frames (oldest
  dropped and counted), so a slow sender never builds latency. A mark rides
  on the frame before it and is reached when that frame is handed to the
  sender.
* :func:`parse_dtmf_text`: the browser's ``dtmf`` data channel carries text
  messages of ``0-9 * # A-D``; anything else is ignored and counted.
* :class:`WebRtcMediaChannel` is the ``PacedChannel``: every agent feature
  (barge-in ``clear``, marks, DTMF, recording) works as on Twilio and SIP.
  Once :meth:`~WebRtcMediaChannel.start` runs it stays on the clock until the
  call ends.
* :class:`ChannelAudioTrack` is the aiortc ``MediaStreamTrack`` the browser
  hears. For PCMU/PCMA it hands the sender ready-made packets (no codec work
  at all); for Opus, 8 kHz PCM frames that aiortc encodes in its executor.
  A G.711 call whose peer set :attr:`WebRtcMediaChannel.direct` (see
  ``webrtc_rtp.DirectG711Sender``) bypasses the track: each tick's frames
  leave from the tick itself, and marks are reached as they do.

Inbound G.711 payloads come straight from the RTP receiver (see
``webrtc_peer.G711Tap``) into :meth:`WebRtcMediaChannel.feed_ulaw`: no
decoding, no thread. Opus is decoded in aiortc's per-receiver decoder thread
and encoded in its executor, so no codec work runs on the media core's loop
either; but each frame then crosses threads twice, which measured costlier
than the codec work itself (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from av.packet import Packet

from voxgate.media import g711
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock, PacedChannel
from voxgate.media.dtmf import DTMF_DIGITS, DtmfEvent, DtmfSource
from voxgate.media.frame import FRAME_BYTES_ULAW, FRAME_SAMPLES, SAMPLE_RATE
from voxgate.media.recorder import CallRecorder
from voxgate.media.resample import StreamResampler

__all__ = [
    "DTMF_LABEL",
    "ChannelAudioTrack",
    "FrameSender",
    "InboundFramer",
    "SenderHandoff",
    "SenderMode",
    "WebRtcCounters",
    "WebRtcMediaChannel",
    "parse_dtmf_text",
]

Int16Array = npt.NDArray[np.int16]

DTMF_LABEL = "dtmf"
"""Label of the data channel the browser opens for key presses."""
MAX_DTMF_MESSAGE = 64
"""Characters of one data-channel message looked at; the rest count as ignored."""

_FRAME_S = 0.020
_SILENCE = b"\xff" * FRAME_BYTES_ULAW
_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)

SenderMode = Literal["pcmu", "pcma", "pcm"]
"""What the track hands aiortc: µ-law or A-law packets, or 8 kHz PCM frames to encode."""


class FrameSender(Protocol):
    """Sends one 160-byte µ-law frame at once (``webrtc_rtp.DirectG711Sender``)."""

    def send(self, ulaw: bytes) -> None: ...


def parse_dtmf_text(message: str | bytes) -> tuple[str, int]:
    """The key presses in one ``dtmf`` data-channel message, and how many
    characters were ignored (not ``0-9 * # A-D``, beyond ``MAX_DTMF_MESSAGE``,
    or a binary message)."""
    if not isinstance(message, str):
        return "", len(message)
    head = message[:MAX_DTMF_MESSAGE]
    digits = "".join(c for c in head if c in DTMF_DIGITS)
    return digits, len(message) - len(digits)


class WebRtcCounters:
    """What one browser call's media did; saved with the call record."""

    __slots__ = (
        "bad_audio",
        "dtmf_digits",
        "dtmf_ignored",
        "gap_frames",
        "gaps",
        "handoff_dropped",
        "inbound_frames",
        "rate_changes",
        "silence_frames",
    )

    def __init__(self) -> None:
        self.inbound_frames = 0
        self.bad_audio = 0
        self.rate_changes = 0
        self.gaps = 0
        self.gap_frames = 0
        self.dtmf_digits = 0
        self.dtmf_ignored = 0
        self.silence_frames = 0
        self.handoff_dropped = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class InboundFramer:
    """Browser audio (mono int16 at any rate) → 160-byte 8 kHz µ-law frames; sans-IO.

    Resampling is soxr's medium quality: its filter holds back ~11 ms of
    audio where high quality holds back ~76 ms, which every caller turn and
    barge-in would wait for; for speech going to an 8 kHz recogniser the
    difference is inaudible. G.711 audio (already 8 kHz µ-law) goes through
    :meth:`feed_ulaw` untouched.

    ``now`` is monotonic seconds. When no audio arrives for ``stall_after``
    beyond the last frame's time, :meth:`poll` returns silence frames for the
    missing time (at most ``max_fill`` seconds per poll); audio that arrives
    later is still delivered.
    """

    __slots__ = (
        "_covered",
        "_max_fill_frames",
        "_pending",
        "_quality",
        "_rate",
        "_resampler",
        "_stall_after",
        "counters",
    )

    def __init__(
        self,
        counters: WebRtcCounters | None = None,
        *,
        stall_after: float = 0.100,
        max_fill: float = 2.0,
        quality: str = "MQ",
    ) -> None:
        self.counters = counters if counters is not None else WebRtcCounters()
        self._stall_after = stall_after
        self._max_fill_frames = max(1, int(max_fill / _FRAME_S))
        self._quality = quality
        self._resampler: StreamResampler | None = None
        self._rate = SAMPLE_RATE
        self._pending: Int16Array = np.zeros(0, dtype=np.int16)
        self._covered: float | None = None  # caller time delivered up to (monotonic)

    def feed(self, pcm: Int16Array, rate: int, now: float) -> list[bytes]:
        """Whole frames completed by this chunk of mono int16 audio at ``rate`` Hz."""
        if rate <= 0 or not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            self.counters.bad_audio += 1
            return []
        if rate != self._rate or self._resampler is None:
            if rate != self._rate and self._covered is not None:
                self.counters.rate_changes += 1
            self._rate = rate
            self._resampler = StreamResampler(rate, SAMPLE_RATE, self._quality)
        out = self._resampler.process(pcm)
        if self._pending.size:
            out = np.concatenate((self._pending, out))
        whole = out.size - out.size % FRAME_SAMPLES
        self._pending = out[whole:]
        count = whole // FRAME_SAMPLES
        if count == 0:
            return []
        encoded = g711.ulaw_encode(out[:whole])
        frames = [encoded[i : i + FRAME_BYTES_ULAW] for i in range(0, whole, FRAME_BYTES_ULAW)]
        self.counters.inbound_frames += count
        covered = self._covered
        self._covered = now if covered is None else max(covered + count * _FRAME_S, now)
        return frames

    def feed_ulaw(self, ulaw: bytes, now: float) -> list[bytes]:
        """Whole frames of 8 kHz µ-law (a G.711 RTP payload): split, never re-coded."""
        if self._rate != SAMPLE_RATE or self._pending.size:
            # Mid-stream from another rate, or a partial frame waiting: the slow way.
            return self.feed(g711.ulaw_decode(ulaw), SAMPLE_RATE, now)
        size = len(ulaw)
        whole = size - size % FRAME_BYTES_ULAW
        if whole != size:
            self._pending = g711.ulaw_decode(ulaw[whole:])
        count = whole // FRAME_BYTES_ULAW
        if count == 0:
            return []
        frames = (
            [ulaw]
            if size == FRAME_BYTES_ULAW
            else [ulaw[i : i + FRAME_BYTES_ULAW] for i in range(0, whole, FRAME_BYTES_ULAW)]
        )
        self.counters.inbound_frames += count
        covered = self._covered
        self._covered = now if covered is None else max(covered + count * _FRAME_S, now)
        return frames

    def next_timeout(self) -> float | None:
        """When :meth:`poll` would next fill silence (None before the first audio)."""
        if self._covered is None:
            return None
        return self._covered + _FRAME_S + self._stall_after

    def poll(self, now: float) -> list[bytes]:
        """Silence frames for audio more than ``stall_after`` overdue."""
        covered = self._covered
        if covered is None:
            return []
        missing = int((now - self._stall_after - covered) / _FRAME_S + 1e-9)
        if missing <= 0:
            return []
        missing = min(missing, self._max_fill_frames)
        self._covered = covered + missing * _FRAME_S
        self.counters.gaps += 1
        self.counters.gap_frames += missing
        return [_SILENCE] * missing


class _Slot:
    __slots__ = ("marks", "synthetic", "ulaw")

    def __init__(self, ulaw: bytes, synthetic: bool) -> None:
        self.ulaw = ulaw
        self.synthetic = synthetic
        self.marks: list[str] | None = None


class SenderHandoff:
    """The frames between the 20 ms clock (producer) and the RTP sender (consumer); sans-IO.

    Bounded at ``limit`` frames: when the sender falls behind, the oldest
    frame goes (its marks move to the next frame), so what the browser hears
    is never more than ``limit`` frames behind the clock.
    """

    __slots__ = ("_limit", "_slots", "counters", "handed")

    def __init__(self, limit: int = 5, counters: WebRtcCounters | None = None) -> None:
        if limit < 1:
            raise ValueError("the handoff must hold at least one frame")
        self._limit = limit
        self._slots: deque[_Slot] = deque()
        self.counters = counters if counters is not None else WebRtcCounters()
        self.handed = 0

    def __len__(self) -> int:
        return len(self._slots)

    def put(self, ulaw: bytes, *, synthetic: bool = False) -> None:
        """One 160-byte µ-law frame for the sender (``synthetic``: silence fill)."""
        slots = self._slots
        slots.append(_Slot(ulaw, synthetic))
        if synthetic:
            self.counters.silence_frames += 1
        while len(slots) > self._limit:
            dropped = slots.popleft()
            self.counters.handoff_dropped += 1
            if dropped.marks:
                head = slots[0]
                head.marks = dropped.marks + (head.marks or [])

    def put_mark(self, name: str) -> bool:
        """A mark after the frames put so far; True when it is reached already
        (everything before it was handed to the sender)."""
        if not self._slots:
            return True
        last = self._slots[-1]
        if last.marks is None:
            last.marks = [name]
        else:
            last.marks.append(name)
        return False

    def take(self) -> tuple[bytes, list[str]] | None:
        """The next frame for the sender and the marks reached by handing it over."""
        if not self._slots:
            return None
        slot = self._slots.popleft()
        self.handed += 1
        return slot.ulaw, slot.marks or []

    def drop_audio(self) -> int:
        """Barge-in: forget every frame not yet handed over; returns how many were
        agent audio. Their marks are not reported here: the outbound queue's flush
        already reported them as not played."""
        dropped = sum(1 for slot in self._slots if not slot.synthetic)
        self._slots.clear()
        return dropped


class ChannelAudioTrack(MediaStreamTrack):
    """The audio the browser hears: frames from a :class:`SenderHandoff`, paced by
    the ``FrameClock`` (``recv`` waits for the next tick's frame)."""

    kind = "audio"

    def __init__(
        self,
        handoff: SenderHandoff,
        mode: SenderMode,
        on_marks: Callable[[list[str]], None],
    ) -> None:
        super().__init__()
        self._handoff = handoff
        self.mode: SenderMode = mode
        self._on_marks = on_marks
        self._waiter: asyncio.Future[None] | None = None
        self._pts = 0

    def wake(self) -> None:
        """A frame is waiting (called by the clock's tick, at most once a tick)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        super().stop()
        self.wake()

    async def recv(self) -> AudioFrame | Packet[Any]:
        handoff = self._handoff
        item = handoff.take()
        while item is None:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            item = handoff.take()
        ulaw, marks = item
        if marks:
            self._on_marks(marks)
        pts = self._pts
        self._pts = pts + FRAME_SAMPLES
        if self.mode == "pcm":
            frame = AudioFrame.from_ndarray(
                g711.ulaw_decode(ulaw).reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = SAMPLE_RATE
            frame.pts = pts
            frame.time_base = _TIME_BASE
            return frame
        packet = Packet(ulaw if self.mode == "pcmu" else g711.ulaw_to_alaw(ulaw))
        packet.pts = pts
        packet.time_base = _TIME_BASE
        return packet


def mono_pcm(frame: AudioFrame) -> Int16Array:
    """A decoded frame's first channel as int16 (aiortc decodes to packed s16)."""
    data = frame.to_ndarray()
    name = frame.format.name
    if frame.format.is_planar:
        pcm = data[0]
    else:
        pcm = data.reshape(-1)[:: max(1, len(frame.layout.channels))]
    if name.startswith("s16"):
        return np.ascontiguousarray(pcm, dtype=np.int16)
    if name.startswith(("flt", "dbl")):
        scaled = np.clip(pcm * 32768.0, -32768, 32767)
        return np.ascontiguousarray(scaled, dtype=np.int16)
    if name.startswith("s32"):
        return np.ascontiguousarray(pcm >> 16, dtype=np.int16)
    raise ValueError(f"unsupported sample format {name}")


class WebRtcMediaChannel(PacedChannel):
    """One browser call's audio and key presses as a ``MediaChannel``.

    The peer wiring (see :mod:`voxgate.media.webrtc_peer`) gives it the
    browser's audio track (:meth:`pull`), data-channel messages
    (:meth:`feed_dtmf_text`) and a coroutine that closes the peer connection;
    it gives the peer connection :attr:`track`.
    """

    confirms_marks_on_write = False  # reached when handed to the RTP sender
    writes_without_waiting = True

    def __init__(
        self,
        call: Call,
        clock: FrameClock,
        close_peer: Callable[[], Awaitable[None]],
        *,
        mode: SenderMode = "pcm",
        recorder: CallRecorder | None = None,
        handoff_limit: int = 5,
        stall_after: float = 0.100,
        inbox_limit: int = 250,
        max_outbound_frames: int = 1500,
    ) -> None:
        super().__init__(
            call, clock, inbox_limit=inbox_limit, max_outbound_frames=max_outbound_frames
        )
        self.counters = WebRtcCounters()
        self.handoff = SenderHandoff(handoff_limit, self.counters)
        self.framer = InboundFramer(self.counters, stall_after=stall_after)
        self.track = ChannelAudioTrack(self.handoff, mode, self._marks_handed)
        self.recorder = recorder
        self._close_peer = close_peer
        self._stall: asyncio.TimerHandle | None = None
        self._started = False
        self.direct: FrameSender | None = None

    # -- outbound ------------------------------------------------------------
    def start(self) -> None:
        """The peer connection is up: from now on every tick hands the sender a
        frame (agent audio or silence) until the call ends."""
        if self._started or self.closed:
            return
        self._started = True
        self._clock.activate(self)

    def pump_now(self, frames_due: int) -> bool:
        if not self._started:
            # Not connected yet: the agent's first words wait in the outbound queue
            # (``start`` puts the channel back on the clock).
            return False
        queue = self.outbound
        handoff = self.handoff
        for _ in range(frames_due):
            frame, marks = queue.pop_frame()
            for mark in marks:
                self._write_mark_now(mark.name)
            if frame is None:
                handoff.put(_SILENCE, synthetic=True)
            else:
                self._write_frame_now(frame)
                self.frames_out += 1
        room = self._room
        if room is not None and queue.space > 0:
            room.set()
        direct = self.direct
        if direct is None:
            self.track.wake()
        else:
            # G.711: the frames go out now, from this tick (see webrtc_rtp).
            while (item := handoff.take()) is not None:
                direct.send(item[0])
                if item[1]:
                    self._marks_handed(item[1])
        return not self.closed  # stay on the clock: silence keeps flowing

    def _write_frame_now(self, ulaw: bytes) -> None:
        self.handoff.put(ulaw)
        if self.recorder is not None:
            self.recorder.agent_ulaw(ulaw, time.monotonic())

    def _write_mark_now(self, name: str) -> None:
        if self.handoff.put_mark(name):
            self.deliver_mark_echo(name)

    def _marks_handed(self, names: list[str]) -> None:
        for name in names:
            self.deliver_mark_echo(name)

    def _schedule_clear(self) -> None:
        # Barge-in drops what the sender has not taken yet, now rather than on
        # the next tick: at most ``handoff_limit`` frames, usually one.
        self.handoff.drop_audio()

    async def _write_frame(self, ulaw: bytes) -> None:
        self._write_frame_now(ulaw)

    async def _write_mark(self, name: str) -> None:
        self._write_mark_now(name)

    async def _write_clear(self) -> None:
        return None  # done in _schedule_clear

    async def _close_transport(self, reason: EndReason) -> None:
        self._stop_media()
        await self._close_peer()

    # -- inbound -------------------------------------------------------------
    async def pull(self, track: MediaStreamTrack) -> None:
        """Feed the browser's audio track to the agent until the track or call ends."""
        loop = asyncio.get_running_loop()
        try:
            while not self.closed:
                frame = await track.recv()
                if not isinstance(frame, AudioFrame):
                    self.counters.bad_audio += 1
                    continue
                try:
                    pcm = mono_pcm(frame)
                except ValueError:
                    self.counters.bad_audio += 1
                    continue
                self.feed_audio(pcm, frame.sample_rate, loop.time())
        except MediaStreamError:
            return  # the track ended: the peer connection is closing
        finally:
            self._disarm_stall()

    def feed_audio(self, pcm: Int16Array, rate: int, now: float) -> None:
        """Decoded browser audio (mono int16 at ``rate``) → the agent's inbound frames."""
        if self.closed:
            return
        recorder = self.recorder
        for payload in self.framer.feed(pcm, rate, now):
            self.deliver_audio(payload)
            if recorder is not None:
                recorder.caller_ulaw(payload, now)
        if self._stall is None:
            self._arm_stall()

    def feed_ulaw(self, ulaw: bytes, now: float) -> None:
        """A G.711 call's RTP payload (8 kHz µ-law) → the agent's inbound frames."""
        if self.closed:
            return
        recorder = self.recorder
        for payload in self.framer.feed_ulaw(ulaw, now):
            self.deliver_audio(payload)
            if recorder is not None:
                recorder.caller_ulaw(payload, now)
        if self._stall is None:
            self._arm_stall()

    def feed_dtmf_text(self, message: str | bytes) -> None:
        """One ``dtmf`` data-channel message: each key becomes a DTMF event."""
        digits, ignored = parse_dtmf_text(message)
        self.counters.dtmf_ignored += ignored
        if self.closed:
            return
        for digit in digits:
            self.counters.dtmf_digits += 1
            self.deliver_dtmf(DtmfEvent(digit, 0.0, DtmfSource.DATA_CHANNEL))
            self.call.record(time.time(), "dtmf", digit)

    def _arm_stall(self) -> None:
        due = self.framer.next_timeout()
        if due is not None and not self.closed:
            self._stall = asyncio.get_running_loop().call_at(due, self._on_stall)

    def _on_stall(self) -> None:
        # Armed once and re-armed when it fires, never per frame: audio that came
        # meanwhile moved the due time, so an early firing only re-arms.
        self._stall = None
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        recorder = self.recorder
        for payload in self.framer.poll(now):
            self.deliver_audio(payload, synthetic=True)
            if recorder is not None:
                recorder.caller_ulaw(payload, now)
        self._arm_stall()

    def _disarm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stop_media(self) -> None:
        self._disarm_stall()
        self.track.stop()

    def deliver_closed(self, reason: EndReason) -> None:
        was_closed = self.closed
        super().deliver_closed(reason)
        if not was_closed:
            self._stop_media()
