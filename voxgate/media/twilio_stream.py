"""Twilio Media Streams protocol state, sans-IO.

``TwilioStreamState.feed(text, now)`` takes one WebSocket text frame and the
current monotonic time and returns what happened (stream started, caller audio
in 160-byte µ-law frames, DTMF, mark echoes, stop). Malformed, unknown,
duplicate or out-of-order frames are counted in ``counters`` and skipped:
``feed`` never raises, a bad frame never ends a call.

Gaps: when Twilio's media timestamps jump, the missing time is filled with
silence frames; when media stops arriving altogether (a stall), ``poll(now)``
fills silence once it is ``stall_after`` late, so the agent's sense of time
(endpointing, no-input timers) keeps moving. Audio that arrives after its time
was filled is still delivered (counted as late): losing the caller's words is
worse than a slightly stretched timeline.

Outbound messages (media, mark, clear) are built as ready-to-send JSON text
with the stream's prefix pre-encoded.
"""

from __future__ import annotations

import base64
import enum

import msgspec

from voxgate.media.dtmf import DTMF_DIGITS, DtmfEvent, DtmfSource
from voxgate.media.frame import FRAME_BYTES_ULAW, FRAME_MS

__all__ = [
    "InboundMedia",
    "MarkEcho",
    "StreamCounters",
    "StreamEvent",
    "StreamNotStarted",
    "StreamPhase",
    "StreamStarted",
    "StreamStopped",
    "TwilioStreamState",
]

_MAX_PAYLOAD = 16000  # 2 s of µ-law in one message is already abnormal
_SILENCE_FRAME = b"\xff" * FRAME_BYTES_ULAW


# --- wire format (inbound) -------------------------------------------------
# Twilio sends numbers as strings ("sequenceNumber": "2"); ints are accepted too.
_Num = str | int


class _MediaFormat(msgspec.Struct, rename="camel"):
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class _StartBody(msgspec.Struct, rename="camel"):
    account_sid: str = ""
    call_sid: str = ""
    stream_sid: str = ""
    tracks: list[str] = msgspec.field(default_factory=list)
    custom_parameters: dict[str, str] = msgspec.field(default_factory=dict)
    media_format: _MediaFormat = msgspec.field(default_factory=_MediaFormat)


# Per-frame structs hold only scalars, so they can never be part of a
# reference cycle: ``gc=False`` keeps ~50 allocations per call per second out
# of the cyclic collector's counts (fewer collections, shorter pauses).
class _MediaBody(msgspec.Struct, gc=False):
    payload: bytes  # msgspec decodes base64 straight into bytes
    track: str = "inbound"
    chunk: _Num | None = None
    timestamp: _Num | None = None


class _DtmfBody(msgspec.Struct):
    digit: str
    track: str = "inbound_track"


class _MarkBody(msgspec.Struct, gc=False):
    name: str


class _StopBody(msgspec.Struct, rename="camel"):
    account_sid: str = ""
    call_sid: str = ""


class _Connected(msgspec.Struct, tag_field="event", tag="connected"):
    protocol: str = ""
    version: str = ""


class _Start(msgspec.Struct, tag_field="event", tag="start", rename="camel"):
    start: _StartBody
    stream_sid: str = ""
    sequence_number: _Num | None = None


class _Media(msgspec.Struct, tag_field="event", tag="media", rename="camel", gc=False):
    media: _MediaBody
    stream_sid: str = ""
    sequence_number: _Num | None = None


class _Dtmf(msgspec.Struct, tag_field="event", tag="dtmf", rename="camel"):
    dtmf: _DtmfBody
    stream_sid: str = ""
    sequence_number: _Num | None = None


class _Mark(msgspec.Struct, tag_field="event", tag="mark", rename="camel", gc=False):
    mark: _MarkBody
    stream_sid: str = ""
    sequence_number: _Num | None = None


class _Stop(msgspec.Struct, tag_field="event", tag="stop", rename="camel"):
    stream_sid: str = ""
    sequence_number: _Num | None = None
    stop: _StopBody = msgspec.field(default_factory=_StopBody)


class _Envelope(msgspec.Struct):
    event: str


_Inbound = _Connected | _Start | _Media | _Dtmf | _Mark | _Stop
_DECODER = msgspec.json.Decoder(_Inbound)
_ENVELOPE_DECODER = msgspec.json.Decoder(_Envelope)
_ENCODER = msgspec.json.Encoder()
_KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


class StreamNotStarted(RuntimeError):
    """Our misuse: building an outbound message before ``start`` arrived."""


# --- events (what feed returns) ---------------------------------------------
class StreamStarted(msgspec.Struct, frozen=True):
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: list[str]
    custom_parameters: dict[str, str]


class InboundMedia(msgspec.Struct, gc=False):
    """160 bytes of caller µ-law; ``synthetic`` for silence filling a gap."""

    payload: bytes
    synthetic: bool = False


class MarkEcho(msgspec.Struct, frozen=True, gc=False):
    name: str


class StreamStopped(msgspec.Struct, frozen=True):
    reason: str


StreamEvent = StreamStarted | InboundMedia | DtmfEvent | MarkEcho | StreamStopped


class StreamPhase(enum.Enum):
    AWAIT_START = "await_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


class StreamCounters:
    """Problems seen on one stream (exported as metrics by the transport)."""

    __slots__ = (
        "duplicates",
        "foreign_stream",
        "gap_frames",
        "gaps",
        "late_frames",
        "malformed",
        "media_frames",
        "out_of_order",
        "unknown_events",
    )

    def __init__(self) -> None:
        self.malformed = 0
        self.unknown_events = 0
        self.out_of_order = 0
        self.duplicates = 0
        self.foreign_stream = 0
        self.media_frames = 0
        self.gaps = 0
        self.gap_frames = 0
        self.late_frames = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _to_int(value: _Num | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        return None


class TwilioStreamState:
    """One Media Streams WebSocket, inbound parsing and outbound building."""

    def __init__(
        self,
        *,
        stall_after: float = 0.100,
        gap_tolerance_ms: int = 10,
        max_gap_fill_ms: int = 2000,
    ) -> None:
        self.phase = StreamPhase.AWAIT_START
        self.counters = StreamCounters()
        self.stream_sid = ""
        self.call_sid = ""
        self.account_sid = ""
        self.custom_parameters: dict[str, str] = {}
        self._stall_after_ms = stall_after * 1000.0
        self._gap_tolerance_ms = gap_tolerance_ms
        self._max_gap_frames = max_gap_fill_ms // FRAME_MS
        self._last_seq = -1
        self._partial = b""
        # Stream-time bookkeeping (ms on Twilio's media timestamp axis).
        self._next_ts: float | None = None  # timestamp just after the last delivered audio
        self._anchor_ts = 0.0  # timestamp just after the last *received* audio
        self._anchor_now = 0.0  # when that audio arrived
        self._media_prefix = ""
        self._media_prefix_bytes = b""
        self._mark_prefix = ""
        self._clear_message = ""

    # -- inbound -----------------------------------------------------------
    def feed(self, text: str | bytes, now: float) -> list[StreamEvent]:
        """Process one inbound WebSocket text frame. Never raises."""
        try:
            message = _DECODER.decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, ValueError):
            self._count_bad(text)
            return []
        events: list[StreamEvent] = []
        if isinstance(message, _Media):
            self._on_media(message, now, events)
        elif isinstance(message, _Start):
            self._on_start(message, now, events)
        elif isinstance(message, _Mark):
            if self._accept(message.stream_sid, message.sequence_number):
                events.append(MarkEcho(message.mark.name))
        elif isinstance(message, _Dtmf):
            if self._accept(message.stream_sid, message.sequence_number):
                digit = message.dtmf.digit
                if len(digit) == 1 and digit in DTMF_DIGITS:
                    events.append(DtmfEvent(digit, 0.0, DtmfSource.TWILIO))
                else:
                    self.counters.malformed += 1
        elif isinstance(message, _Stop):
            if self._accept(message.stream_sid, message.sequence_number):
                self._flush_partial(events)
                self.phase = StreamPhase.STOPPED
                events.append(StreamStopped("stop"))
        elif self.phase is not StreamPhase.AWAIT_START:
            # "connected" is only valid as the very first message.
            self.counters.out_of_order += 1
        return events

    def _count_bad(self, text: str | bytes) -> None:
        # Valid JSON with an "event" we do not know, or a known event with bad
        # fields: tell the two apart so new Twilio events show up as such.
        try:
            event = _ENVELOPE_DECODER.decode(text).event
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError, ValueError):
            self.counters.malformed += 1
            return
        if event in _KNOWN_EVENTS:
            self.counters.malformed += 1
        else:
            self.counters.unknown_events += 1

    def _accept(self, stream_sid: str, sequence: _Num | None) -> bool:
        """Order, identity and duplicate checks shared by post-start messages."""
        if self.phase is not StreamPhase.STREAMING:
            self.counters.out_of_order += 1
            return False
        if stream_sid and stream_sid != self.stream_sid:
            self.counters.foreign_stream += 1
            return False
        seq = _to_int(sequence)
        if seq is not None:
            if seq <= self._last_seq:
                self.counters.duplicates += 1
                return False
            self._last_seq = seq
        return True

    def _on_start(self, message: _Start, now: float, events: list[StreamEvent]) -> None:
        if self.phase is not StreamPhase.AWAIT_START:
            self.counters.out_of_order += 1
            return
        body = message.start
        sid = body.stream_sid or message.stream_sid
        fmt = body.media_format
        if not sid:
            self.counters.malformed += 1
            return
        self.stream_sid = sid
        self.call_sid = body.call_sid
        self.account_sid = body.account_sid
        self.custom_parameters = dict(body.custom_parameters)
        seq = _to_int(message.sequence_number)
        if seq is not None:
            self._last_seq = seq
        self.phase = StreamPhase.STREAMING
        sid_json = _ENCODER.encode(sid).decode()
        self._media_prefix = '{"event":"media","streamSid":' + sid_json + ',"media":{"payload":"'
        self._media_prefix_bytes = self._media_prefix.encode()
        self._mark_prefix = '{"event":"mark","streamSid":' + sid_json + ',"mark":{"name":'
        self._clear_message = '{"event":"clear","streamSid":' + sid_json + "}"
        self._anchor_now = now
        events.append(
            StreamStarted(
                sid, body.call_sid, body.account_sid, list(body.tracks), self.custom_parameters
            )
        )
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != ("audio/x-mulaw", 8000, 1):
            self.phase = StreamPhase.STOPPED
            reason = f"unsupported media format {fmt.encoding}/{fmt.sample_rate}"
            events.append(StreamStopped(reason))

    def _on_media(self, message: _Media, now: float, events: list[StreamEvent]) -> None:
        body = message.media
        if body.track not in ("inbound", "inbound_track"):
            # Outbound-track echoes (tracks="both") are not caller audio.
            return
        if not self._accept(message.stream_sid, message.sequence_number):
            return
        payload = body.payload
        size = len(payload)
        if size == 0 or size > _MAX_PAYLOAD:
            self.counters.malformed += 1
            return
        duration_ms = size / 8.0  # 8 bytes per ms of 8 kHz µ-law
        ts = _to_int(body.timestamp)
        next_ts = self._next_ts
        if next_ts is None:
            next_ts = float(ts) if ts is not None else 0.0
        elif ts is not None:
            ahead = ts - next_ts
            if ahead > self._gap_tolerance_ms:
                self._fill(int(ahead // FRAME_MS), events)
                next_ts += (ahead // FRAME_MS) * FRAME_MS
            elif ahead < -FRAME_MS:
                self.counters.late_frames += 1
        start_ts = float(ts) if ts is not None else next_ts
        self._anchor_ts = start_ts + duration_ms
        self._anchor_now = now
        self._next_ts = max(next_ts, start_ts) + duration_ms
        if size == FRAME_BYTES_ULAW and not self._partial:
            self.counters.media_frames += 1
            events.append(InboundMedia(payload))
            return
        data = self._partial + payload
        whole = len(data) - len(data) % FRAME_BYTES_ULAW
        for offset in range(0, whole, FRAME_BYTES_ULAW):
            events.append(InboundMedia(data[offset : offset + FRAME_BYTES_ULAW]))
        self.counters.media_frames += whole // FRAME_BYTES_ULAW
        self._partial = data[whole:]

    def _fill(self, frames: int, events: list[StreamEvent]) -> None:
        frames = min(frames, self._max_gap_frames)
        if frames <= 0:
            return
        self.counters.gaps += 1
        self.counters.gap_frames += frames
        events.extend(InboundMedia(_SILENCE_FRAME, synthetic=True) for _ in range(frames))

    def _flush_partial(self, events: list[StreamEvent]) -> None:
        if self._partial:
            pad = FRAME_BYTES_ULAW - len(self._partial)
            events.append(InboundMedia(self._partial + b"\xff" * pad))
            self._partial = b""

    # -- timers ------------------------------------------------------------
    def next_timeout(self) -> float | None:
        """When ``poll`` would next fill a stall (monotonic seconds), if ever."""
        if self.phase is not StreamPhase.STREAMING or self._next_ts is None:
            return None
        target_ts = self._next_ts + FRAME_MS + self._stall_after_ms
        return self._anchor_now + (target_ts - self._anchor_ts) / 1000.0

    def poll(self, now: float) -> list[StreamEvent]:
        """Silence for media that is more than ``stall_after`` overdue."""
        events: list[StreamEvent] = []
        if self.phase is not StreamPhase.STREAMING or self._next_ts is None:
            return events
        due_ts = self._anchor_ts + (now - self._anchor_now) * 1000.0 - self._stall_after_ms
        missing = int((due_ts - self._next_ts) // FRAME_MS)
        if missing > 0:
            before = self.counters.gap_frames
            self._fill(missing, events)
            self._next_ts += (self.counters.gap_frames - before) * FRAME_MS
        return events

    # -- outbound ----------------------------------------------------------
    def media_message(self, ulaw: bytes) -> str:
        """``media`` message carrying µ-law audio (normally one 160-byte frame)."""
        if not self._media_prefix:
            raise StreamNotStarted("no stream yet: outbound messages need the streamSid")
        return self._media_prefix + base64.b64encode(ulaw).decode("ascii") + '"}}'

    def media_message_bytes(self, ulaw: bytes) -> bytes:
        """``media_message`` as UTF-8 bytes, built without a str round trip
        (the per-frame form for transports that write bytes)."""
        if not self._media_prefix_bytes:
            raise StreamNotStarted("no stream yet: outbound messages need the streamSid")
        return self._media_prefix_bytes + base64.b64encode(ulaw) + b'"}}'

    def mark_message(self, name: str) -> str:
        if not self._mark_prefix:
            raise StreamNotStarted("no stream yet: outbound messages need the streamSid")
        return self._mark_prefix + _ENCODER.encode(name).decode() + "}}"

    def clear_message(self) -> str:
        if not self._clear_message:
            raise StreamNotStarted("no stream yet: outbound messages need the streamSid")
        return self._clear_message
