"""RFC 4733 telephone-events (DTMF over RTP): the 4-byte payload, a receiver
that turns a stream of event packets into one :class:`DtmfEvent` per key
press, and the packet plan a sender follows for one digit.
"""

from __future__ import annotations

import collections
import struct

import msgspec

__all__ = [
    "DtmfEvent",
    "DtmfPacket",
    "DtmfReceiver",
    "TelephoneEvent",
    "TelephoneEventError",
    "digit_to_event",
    "dtmf_packets",
    "event_to_digit",
]

# RFC 4733 §3.2 event codes 0-15; 16 is hook flash.
_DIGITS = "0123456789*#ABCD"
FLASH_EVENT = 16
_PAYLOAD = struct.Struct("!BBH")


class TelephoneEventError(ValueError):
    """A telephone-event payload or digit is invalid."""


def digit_to_event(digit: str) -> int:
    d = digit.upper()
    if len(d) != 1 or d not in _DIGITS:
        raise TelephoneEventError(f"not a DTMF digit: {digit!r}")
    return _DIGITS.index(d)


def event_to_digit(event: int) -> str | None:
    """The DTMF character for an event code, or None for other events."""
    return _DIGITS[event] if 0 <= event < len(_DIGITS) else None


class TelephoneEvent(msgspec.Struct, frozen=True, kw_only=True):
    event: int
    end: bool = False
    volume: int = 10  # 0..63, -dBm0
    duration: int = 0  # timestamp units since the event began

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        # Longer payloads carry more events back to back (rare); the first
        # one is the event this packet is about.
        if len(payload) < 4:
            raise TelephoneEventError(f"telephone-event payload too short ({len(payload)} bytes)")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        if not 0 <= self.event <= 255 or not 0 <= self.volume <= 63:
            raise TelephoneEventError("event/volume out of range")
        if not 0 <= self.duration <= 0xFFFF:
            raise TelephoneEventError("duration out of range")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


class DtmfEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One key press received from the remote."""

    digit: str  # "0".."9", "*", "#", "A".."D", or "!" for hook flash / "?" others
    event: int
    duration_ms: int
    volume: int
    timestamp: int  # RTP timestamp of the event start
    # False when the end packets never came (timed out or superseded).
    ended: bool = True


class _Current:
    __slots__ = ("duration", "event", "last_seen", "timestamp", "volume")

    def __init__(self, t: TelephoneEvent, timestamp: int, now: float) -> None:
        self.event = t.event
        self.timestamp = timestamp
        self.duration = t.duration
        self.volume = t.volume
        self.last_seen = now


class DtmfReceiver:
    """Turns telephone-event packets into one :class:`DtmfEvent` per digit.

    Packets of one event share the RTP timestamp of its start; the end is
    sent three times (RFC 4733 §2.5.1.4), so ended timestamps are remembered
    and their repeats ignored. If the end packets are all lost, the event is
    reported when the next one starts or after ``timeout`` of silence.
    """

    def __init__(self, *, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: _Current | None = None
        self._ended: collections.deque[int] = collections.deque(maxlen=8)

    def _emit(self, cur: _Current, *, ended: bool) -> DtmfEvent:
        self._ended.append(cur.timestamp)
        digit = event_to_digit(cur.event)
        if digit is None:
            digit = "!" if cur.event == FLASH_EVENT else "?"
        return DtmfEvent(
            digit=digit,
            event=cur.event,
            duration_ms=cur.duration * 1000 // self.clock_rate,
            volume=cur.volume,
            timestamp=cur.timestamp,
            ended=ended,
        )

    def receive(self, timestamp: int, payload: bytes, now: float) -> list[DtmfEvent]:
        """Feed one telephone-event RTP packet; returns finished events
        (raises :class:`TelephoneEventError` on a bad payload)."""
        t = TelephoneEvent.parse(payload)
        out: list[DtmfEvent] = []
        if timestamp in self._ended:
            return out  # repeated end packet, or a straggler of a finished event
        cur = self._current
        if cur is not None and cur.timestamp != timestamp:
            out.append(self._emit(cur, ended=False))
            cur = None
        if cur is None:
            cur = self._current = _Current(t, timestamp, now)
        cur.duration = max(cur.duration, t.duration)
        cur.last_seen = now
        if t.end:
            out.append(self._emit(cur, ended=True))
            self._current = None
        return out

    def poll(self, now: float) -> list[DtmfEvent]:
        """Report an event whose end packets never arrived."""
        cur = self._current
        if cur is not None and now - cur.last_seen >= self.timeout:
            self._current = None
            return [self._emit(cur, ended=False)]
        return []

    def next_timeout(self) -> float | None:
        cur = self._current
        return None if cur is None else cur.last_seen + self.timeout


class DtmfPacket(msgspec.Struct, frozen=True, kw_only=True):
    """One packet of a digit: send it ``at`` seconds after the digit starts,
    with the digit's start timestamp and the marker bit as given."""

    at: float
    payload: bytes
    marker: bool
    end: bool


def dtmf_packets(
    digit: str,
    *,
    duration_ms: int = 100,
    interval_ms: int = 50,
    volume: int = 10,
    clock_rate: int = 8000,
    end_repeats: int = 3,
) -> list[DtmfPacket]:
    """The packet sequence for one digit (RFC 4733 §2.5.1): a first packet
    with the marker bit, an update every ``interval_ms`` carrying the
    duration so far, then the final duration with the end bit, repeated."""
    if not 40 <= duration_ms <= 8000:
        raise TelephoneEventError("DTMF duration must be 40..8000 ms")
    if not 10 <= interval_ms <= 1000:
        raise TelephoneEventError("DTMF update interval must be 10..1000 ms")
    event = digit_to_event(digit)
    total = duration_ms * clock_rate // 1000
    step = interval_ms * clock_rate // 1000
    packets: list[DtmfPacket] = []
    t = 0
    while t < total:
        packets.append(
            DtmfPacket(
                at=t / clock_rate,
                payload=TelephoneEvent(
                    event=event, volume=volume, duration=min(t + step, total)
                ).serialize(),
                marker=t == 0,
                end=False,
            )
        )
        t += step
    end = TelephoneEvent(event=event, end=True, volume=volume, duration=total).serialize()
    packets += [
        DtmfPacket(at=total / clock_rate, payload=end, marker=False, end=True)
        for _ in range(end_repeats)
    ]
    return packets
