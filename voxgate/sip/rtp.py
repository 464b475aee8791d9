"""RTP packets (RFC 3550 §5), wrap-aware sequence/timestamp arithmetic and the
sending side of one RTP stream.

Everything here is sans-IO: bytes in, bytes out, the caller supplies ``now``.
"""

from __future__ import annotations

import random
import struct

__all__ = [
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpExtension",
    "RtpPacket",
    "RtpSender",
    "SequenceUnwrapper",
    "TimestampUnwrapper",
    "is_rtcp",
    "seq_add",
    "seq_diff",
    "seq_lt",
    "ts_add",
    "ts_diff",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram is not a valid RTP packet (the remote's fault), or a packet
    could not be built from the given fields."""


# --- wrap-aware arithmetic ------------------------------------------------


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers,
    in ``[-32768, 32767]`` (positive when ``a`` is after ``b``)."""
    d = (a - b) & 0xFFFF
    return d - SEQ_MOD if d >= 0x8000 else d


def seq_lt(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes before ``b`` (modulo 2^16)."""
    return seq_diff(a, b) < 0


def seq_add(seq: int, n: int) -> int:
    return (seq + n) & 0xFFFF


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 32-bit RTP timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - TS_MOD if d >= 0x80000000 else d


def ts_add(ts: int, n: int) -> int:
    return (ts + n) & 0xFFFFFFFF


class SequenceUnwrapper:
    """Maps 16-bit sequence numbers onto a monotonic extended (cycle-counted)
    number line, relative to the highest number seen so far. A late packet
    from before a wrap maps below the wrap, not a whole cycle ahead."""

    __slots__ = ("_highest",)

    def __init__(self) -> None:
        self._highest: int | None = None

    def unwrap(self, seq: int) -> int:
        if self._highest is None:
            # Start one cycle in so a packet older than the first one never
            # goes negative.
            self._highest = SEQ_MOD + seq
            return self._highest
        ext = self._highest + seq_diff(seq, self._highest & 0xFFFF)
        if ext > self._highest:
            self._highest = ext
        return ext

    @property
    def highest(self) -> int | None:
        return self._highest


class TimestampUnwrapper:
    """Same as :class:`SequenceUnwrapper` for 32-bit RTP timestamps."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, ts: int) -> int:
        if self._last is None:
            self._last = TS_MOD + ts
            return self._last
        ext = self._last + ts_diff(ts, self._last & 0xFFFFFFFF)
        if ext > self._last:
            self._last = ext
        return ext


# --- packets --------------------------------------------------------------


class RtpExtension:
    """An RFC 3550 §5.3.1 header extension: a 16-bit profile word and data
    whose length is a multiple of 4 bytes."""

    __slots__ = ("data", "profile")

    def __init__(self, profile: int, data: bytes) -> None:
        if not 0 <= profile <= 0xFFFF:
            raise RtpError("extension profile out of range")
        if len(data) % 4 or len(data) > 0xFFFF * 4:
            raise RtpError("extension data must be a multiple of 4 bytes")
        self.profile = profile
        self.data = bytes(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpExtension):
            return NotImplemented
        return self.profile == other.profile and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RtpExtension(profile={self.profile:#06x}, {len(self.data)} bytes)"


def is_rtcp(data: bytes) -> bool:
    """True when a datagram looks like RTCP rather than RTP (RFC 5761 §4):
    the second byte is an RTCP packet type 192-223."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


class RtpPacket:
    """One RTP packet. ``padding`` is the number of padding bytes to add on
    serialisation (and that were stripped when parsing)."""

    __slots__ = (
        "csrcs",
        "extension",
        "marker",
        "padding",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        *,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes = b"",
        marker: bool = False,
        csrcs: tuple[int, ...] = (),
        extension: RtpExtension | None = None,
        padding: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker
        self.csrcs = csrcs
        self.extension = extension
        self.padding = padding

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse and validate one RTP packet; raise :class:`RtpError` otherwise."""
        buf = bytes(data)
        if len(buf) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({len(buf)} bytes)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(buf)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6} is not 2")
        has_padding = bool(b0 & 0x20)
        has_extension = bool(b0 & 0x10)
        cc = b0 & 0x0F
        marker = bool(b1 & 0x80)
        pt = b1 & 0x7F
        if 72 <= pt <= 76:
            # Would collide with RTCP SR/RR/SDES/BYE/APP (RFC 3550 §5.1, RFC 5761 §4).
            raise RtpError(f"payload type {pt} is reserved (RTCP range)")
        pos = RTP_HEADER_SIZE
        end = len(buf)
        if has_padding:
            pad = buf[-1]
            if pad == 0:
                raise RtpError("padding bit set with a zero padding count")
            end -= pad
            if end < pos:
                raise RtpError("padding count larger than the payload")
        if pos + 4 * cc > end:
            raise RtpError("CSRC list runs past the packet")
        csrcs = struct.unpack_from(f"!{cc}I", buf, pos) if cc else ()
        pos += 4 * cc
        extension = None
        if has_extension:
            if pos + 4 > end:
                raise RtpError("header extension runs past the packet")
            profile, words = _EXT_HEADER.unpack_from(buf, pos)
            pos += 4
            if pos + 4 * words > end:
                raise RtpError("header extension data runs past the packet")
            extension = RtpExtension(profile, buf[pos : pos + 4 * words])
            pos += 4 * words
        if end < pos:
            raise RtpError("padding count larger than the payload")
        return cls(
            payload_type=pt,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=buf[pos:end],
            marker=marker,
            csrcs=tuple(csrcs),
            extension=extension,
            padding=len(buf) - end,
        )

    def serialize(self) -> bytes:
        """The packet's wire bytes; raise :class:`RtpError` on out-of-range fields."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError("payload type out of range")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise RtpError("sequence number out of range")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise RtpError("timestamp/SSRC out of range")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise RtpError("padding out of range")
        b0 = RTP_VERSION << 6 | len(self.csrcs)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [_HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        try:
            for csrc in self.csrcs:
                parts.append(struct.pack("!I", csrc))
        except struct.error as exc:
            raise RtpError("CSRC out of range") from exc
        if self.extension is not None:
            ext = self.extension
            parts.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4))
            parts.append(ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence_number}, "
            f"ts={self.timestamp}, ssrc={self.ssrc:#010x}, marker={self.marker}, "
            f"{len(self.payload)} bytes)"
        )


# --- sending --------------------------------------------------------------


class RtpSender:
    """Numbers the packets of one outgoing RTP stream.

    SSRC, first sequence number and first timestamp are random (RFC 3550 §5.1,
    to make known-plaintext attacks harder and to tell restarted streams
    apart). Audio frames advance the timestamp by their sample count; when the
    caller skips a stretch of wall-clock time (no frame sent for a while), the
    timestamp advances by the elapsed time, so the receiver sees the gap, and
    the first frame after it carries the marker bit (start of a talkspurt).
    """

    def __init__(
        self,
        payload_type: int,
        *,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        rng: random.Random | None = None,
        ssrc: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise RtpError("payload type out of range")
        rand = rng if rng is not None else random.SystemRandom()
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self.ssrc = ssrc if ssrc is not None else rand.getrandbits(32)
        self._seq = rand.getrandbits(16)
        self._ts = rand.getrandbits(32)
        # Timestamp/time of the last frame sent, or None before the first.
        self._last_ts: int | None = None
        self._last_time: float | None = None
        self.packets_sent = 0
        self.octets_sent = 0

    @property
    def next_sequence_number(self) -> int:
        return self._seq

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp that corresponds to wall-clock ``now`` (used for
        SR reports and for the start of a DTMF event)."""
        if self._last_ts is None or self._last_time is None:
            return self._ts
        elapsed = round((now - self._last_time) * self.clock_rate)
        return ts_add(self._last_ts, max(0, elapsed))

    def send_frame(self, payload: bytes, now: float, *, samples: int | None = None) -> bytes:
        """Build the next audio packet for a frame captured at ``now``."""
        n = self.frame_samples if samples is None else samples
        marker = False
        if self._last_ts is None or self._last_time is None:
            ts = self._ts
            marker = True
        else:
            expected = ts_add(self._last_ts, n)
            gap = now - self._last_time
            # More than 1.5 frame periods of silence: a new talkspurt. Jitter in
            # the caller's own 20 ms clock stays well below that.
            if gap > 1.5 * n / self.clock_rate:
                frames = max(1, round(gap * self.clock_rate / n))
                ts = ts_add(self._last_ts, frames * n)
                marker = True
            else:
                ts = expected
        self._last_ts = ts
        self._last_time = now
        return self.build(self.payload_type, payload, ts, marker=marker)

    def build(self, payload_type: int, payload: bytes, timestamp: int, *, marker: bool) -> bytes:
        """Build a packet with the next sequence number of this stream (also
        used for telephone-event packets, which share SSRC and numbering)."""
        if not 0 <= payload_type <= 127 or not 0 <= timestamp <= 0xFFFFFFFF:
            raise RtpError("payload type or timestamp out of range")
        # Hot path (every 20 ms per call): pack the fixed header directly.
        header = _HEADER.pack(
            RTP_VERSION << 6,
            (0x80 if marker else 0) | payload_type,
            self._seq,
            timestamp,
            self.ssrc,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload
