"""RTCP (RFC 3550 §6): SR/RR/SDES/BYE packets, compound packets, reception
statistics (Appendix A.1, A.3, A.8) and the report interval (A.7).

Sans-IO like the rest of the RTP stack: wall-clock time comes in as ``now``
(seconds since the Unix epoch, so NTP timestamps in reports are real ones).
"""

from __future__ import annotations

import math
import random
import struct

import msgspec

__all__ = [
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "Bye",
    "ReceiverReport",
    "ReceptionStatistics",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtcpStats",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_rtcp",
    "round_trip_time",
    "rtcp_interval",
    "serialize_rtcp",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_END = 0
SDES_CNAME = 1
MAX_RTCP_BYTES = 65535

# Seconds between 1900-01-01 (NTP epoch) and 1970-01-01 (Unix epoch).
NTP_UNIX_OFFSET = 2208988800

_REPORT = struct.Struct("!IBBHIIII")  # ssrc, fraction, cum lost (3 bytes split), ...
_SENDER_INFO = struct.Struct("!QIII")


class RtcpError(ValueError):
    """A datagram is not valid RTCP, or a packet could not be built."""


def ntp_from_unix(now: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) for a Unix time."""
    return round((now + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as used in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


# --- packets --------------------------------------------------------------


class ReportBlock(msgspec.Struct, frozen=True, kw_only=True):
    ssrc: int
    fraction_lost: int  # 0..255, lost fraction since the last report times 256
    cumulative_lost: int  # signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int  # interarrival jitter, timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP time
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def pack(self) -> bytes:
        if not -(1 << 23) <= self.cumulative_lost < (1 << 23):
            raise RtcpError("cumulative lost out of range")
        lost = self.cumulative_lost & 0xFFFFFF
        try:
            return _REPORT.pack(
                self.ssrc,
                self.fraction_lost,
                lost >> 16,
                lost & 0xFFFF,
                self.highest_seq,
                self.jitter,
                self.lsr,
                self.dlsr,
            )
        except struct.error as exc:
            raise RtcpError(f"report block field out of range: {exc}") from exc

    @classmethod
    def unpack(cls, buf: bytes, pos: int) -> ReportBlock:
        ssrc, fraction, lost_hi, lost_lo, highest, jitter, lsr, dlsr = _REPORT.unpack_from(buf, pos)
        lost = lost_hi << 16 | lost_lo
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=lost,
            highest_seq=highest,
            jitter=jitter,
            lsr=lsr,
            dlsr=dlsr,
        )


class SenderReport(msgspec.Struct, kw_only=True):
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = msgspec.field(default_factory=list)
    extension: bytes = b""


class ReceiverReport(msgspec.Struct, kw_only=True):
    ssrc: int
    reports: list[ReportBlock] = msgspec.field(default_factory=list)
    extension: bytes = b""


class SdesChunk(msgspec.Struct, kw_only=True):
    ssrc: int
    items: list[tuple[int, bytes]] = msgspec.field(default_factory=list)

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


class SourceDescription(msgspec.Struct, kw_only=True):
    chunks: list[SdesChunk] = msgspec.field(default_factory=list)

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls(chunks=[SdesChunk(ssrc=ssrc, items=[(SDES_CNAME, cname.encode())])])


class Bye(msgspec.Struct, kw_only=True):
    sources: list[int] = msgspec.field(default_factory=list)
    reason: str | None = None


class UnknownRtcp(msgspec.Struct, kw_only=True):
    """Any other packet type (APP, XR, feedback...), kept as bytes."""

    packet_type: int
    count: int
    payload: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise RtcpError("RTCP packet body is not a multiple of 4 bytes")
    if count > 31:
        raise RtcpError("RTCP count field over 31")
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def _serialize_one(packet: RtcpPacket) -> bytes:
    try:
        if isinstance(packet, SenderReport):
            body = struct.pack("!I", packet.ssrc) + _SENDER_INFO.pack(
                packet.ntp_timestamp, packet.rtp_timestamp, packet.packet_count, packet.octet_count
            )
            body += b"".join(r.pack() for r in packet.reports) + packet.extension
            return _header(RTCP_SR, len(packet.reports), body)
        if isinstance(packet, ReceiverReport):
            body = struct.pack("!I", packet.ssrc)
            body += b"".join(r.pack() for r in packet.reports) + packet.extension
            return _header(RTCP_RR, len(packet.reports), body)
        if isinstance(packet, SourceDescription):
            parts: list[bytes] = []
            for chunk in packet.chunks:
                data = struct.pack("!I", chunk.ssrc)
                for kind, value in chunk.items:
                    if not 1 <= kind <= 255 or len(value) > 255:
                        raise RtcpError("bad SDES item")
                    data += bytes([kind, len(value)]) + value
                # At least one null octet ends the item list, then pad to 32 bits.
                data += b"\x00" * (4 - len(data) % 4)
                parts.append(data)
            return _header(RTCP_SDES, len(packet.chunks), b"".join(parts))
        if isinstance(packet, Bye):
            body = b"".join(struct.pack("!I", s) for s in packet.sources)
            if packet.reason is not None:
                reason = packet.reason.encode("utf-8")[:255]
                body += bytes([len(reason)]) + reason
                body += b"\x00" * (-len(body) % 4)
            return _header(RTCP_BYE, len(packet.sources), body)
        return _header(packet.packet_type, packet.count, packet.payload)
    except struct.error as exc:
        raise RtcpError(f"RTCP field out of range: {exc}") from exc


def serialize_rtcp(packets: list[RtcpPacket]) -> bytes:
    """A compound RTCP packet (the caller puts SR/RR first, RFC 3550 §6.1)."""
    if not packets:
        raise RtcpError("empty compound packet")
    return b"".join(_serialize_one(p) for p in packets)


def _parse_reports(buf: bytes, pos: int, count: int, end: int) -> tuple[list[ReportBlock], int]:
    if pos + 24 * count > end:
        raise RtcpError("report blocks run past the packet")
    reports = [ReportBlock.unpack(buf, pos + 24 * i) for i in range(count)]
    return reports, pos + 24 * count


def _parse_sdes(buf: bytes, pos: int, count: int, end: int) -> SourceDescription:
    chunks: list[SdesChunk] = []
    for _ in range(count):
        if pos + 4 > end:
            raise RtcpError("SDES chunk runs past the packet")
        (ssrc,) = struct.unpack_from("!I", buf, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= end:
                raise RtcpError("SDES item list not terminated")
            kind = buf[pos]
            if kind == SDES_END:
                pos += 1
                break
            if pos + 2 > end or pos + 2 + buf[pos + 1] > end:
                raise RtcpError("SDES item runs past the packet")
            length = buf[pos + 1]
            items.append((kind, buf[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        # Chunks start on 32-bit boundaries (relative to the packet start,
        # which is itself aligned).
        pos += -pos % 4
        chunks.append(SdesChunk(ssrc=ssrc, items=items))
    return SourceDescription(chunks=chunks)


def _parse_bye(buf: bytes, pos: int, count: int, end: int) -> Bye:
    if pos + 4 * count > end:
        raise RtcpError("BYE sources run past the packet")
    sources = list(struct.unpack_from(f"!{count}I", buf, pos))
    pos += 4 * count
    reason = None
    if pos < end:
        length = buf[pos]
        if pos + 1 + length > end:
            raise RtcpError("BYE reason runs past the packet")
        reason = buf[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
    return Bye(sources=sources, reason=reason)


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound (or single) RTCP packet; raise :class:`RtcpError`."""
    buf = bytes(data)
    if len(buf) > MAX_RTCP_BYTES:
        raise RtcpError("RTCP datagram too large")
    if len(buf) < 4:
        raise RtcpError("RTCP packet too short")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(buf):
        if pos + 4 > len(buf):
            raise RtcpError("trailing bytes after the last RTCP packet")
        b0, packet_type, words = struct.unpack_from("!BBH", buf, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6} is not 2")
        count = b0 & 0x1F
        start = pos + 4
        end = start + 4 * words
        if end > len(buf):
            raise RtcpError("RTCP length runs past the datagram")
        if b0 & 0x20:
            # RFC 3550 §6.4.1: only the last packet of a compound may be padded.
            if end != len(buf):
                raise RtcpError("padding on a packet that is not the last")
            if words == 0 or buf[end - 1] == 0 or buf[end - 1] > 4 * words:
                raise RtcpError("bad RTCP padding count")
            body_end = end - buf[end - 1]
        else:
            body_end = end
        if packet_type == RTCP_SR:
            if start + 24 > body_end:
                raise RtcpError("SR too short")
            (ssrc,) = struct.unpack_from("!I", buf, start)
            ntp, rtp_ts, pkts, octets = _SENDER_INFO.unpack_from(buf, start + 4)
            reports, after = _parse_reports(buf, start + 24, count, body_end)
            packets.append(
                SenderReport(
                    ssrc=ssrc,
                    ntp_timestamp=ntp,
                    rtp_timestamp=rtp_ts,
                    packet_count=pkts,
                    octet_count=octets,
                    reports=reports,
                    extension=buf[after:body_end],
                )
            )
        elif packet_type == RTCP_RR:
            if start + 4 > body_end:
                raise RtcpError("RR too short")
            (ssrc,) = struct.unpack_from("!I", buf, start)
            reports, after = _parse_reports(buf, start + 4, count, body_end)
            packets.append(
                ReceiverReport(ssrc=ssrc, reports=reports, extension=buf[after:body_end])
            )
        elif packet_type == RTCP_SDES:
            packets.append(_parse_sdes(buf, start, count, body_end))
        elif packet_type == RTCP_BYE:
            packets.append(_parse_bye(buf, start, count, body_end))
        elif 192 <= packet_type <= 223:
            packets.append(
                UnknownRtcp(packet_type=packet_type, count=count, payload=buf[start:body_end])
            )
        else:
            raise RtcpError(f"packet type {packet_type} is not RTCP")
        pos = end
    return packets


# --- statistics -------------------------------------------------------------


class RtcpStats(msgspec.Struct, kw_only=True):
    """Media quality of one call's RTP, for the call record."""

    packets_received: int = 0
    packets_expected: int = 0
    packets_lost: int = 0
    fraction_lost: float = 0.0  # of the last report interval, 0..1
    jitter: int = 0  # RFC 3550 interarrival jitter, timestamp units
    jitter_ms: float = 0.0
    max_jitter_ms: float = 0.0
    packets_sent: int = 0
    octets_sent: int = 0
    # From the remote's reports about our stream.
    remote_packets_lost: int | None = None
    remote_fraction_lost: float | None = None
    remote_jitter_ms: float | None = None
    rtt_ms: float | None = None


MAX_DROPOUT = 3000
MAX_MISORDER = 100
SEQ_MOD = 1 << 16


class ReceptionStatistics:
    """Receiver statistics for one remote SSRC (RFC 3550 A.1, A.3, A.8)."""

    def __init__(self, *, clock_rate: int = 8000, min_sequential: int = 1) -> None:
        self.clock_rate = clock_rate
        self.min_sequential = min_sequential
        self.ssrc: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._base_seq = 0
        self._bad_seq = SEQ_MOD + 1
        self._probation = min_sequential
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._max_jitter = 0.0
        self._last_fraction = 0
        self._started = False
        # Last SR from the remote: LSR value and when it arrived.
        self._lsr = 0
        self._lsr_time: float | None = None

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(
        self, ssrc: int, seq: int, timestamp: int, now: float, *, jitter: bool = True
    ) -> bool:
        """Account one received packet; False when A.1 deems it invalid (in
        probation, or a stray far-off sequence number)."""
        if self.ssrc != ssrc or not self._started:
            self.ssrc = ssrc
            self._started = True
            self._init_seq(seq)
            self._max_seq = (seq - 1) % SEQ_MOD
            self._probation = self.min_sequential
            self._transit = None
        valid = self._update_seq(seq)
        if valid and jitter:
            # A.8, with arrival converted to timestamp units.
            transit = now * self.clock_rate - timestamp
            if self._transit is not None:
                d = abs(transit - self._transit)
                if d < (1 << 31):
                    self._jitter += (d - self._jitter) / 16.0
                    self._max_jitter = max(self._max_jitter, self._jitter)
            self._transit = transit
        return valid

    def _update_seq(self, seq: int) -> bool:
        udelta = (seq - self._max_seq) % SEQ_MOD
        if self._probation:
            if seq == (self._max_seq + 1) % SEQ_MOD:
                self._probation -= 1
                self._max_seq = seq
                if self._probation == 0:
                    self._init_seq(seq)
                    self._received += 1
                    return True
            else:
                self._probation = self.min_sequential - 1
                self._max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += SEQ_MOD
            self._max_seq = seq
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if seq == self._bad_seq:
                # Two sequential packets: the source restarted its numbering.
                self._init_seq(seq)
            else:
                self._bad_seq = (seq + 1) % SEQ_MOD
                return False
        # else: duplicate or reordered packet, counted below.
        self._received += 1
        return True

    # -- derived values ------------------------------------------------------

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self._base_seq + 1 if self._received else 0

    @property
    def lost(self) -> int:
        lost = self.expected - self._received
        return max(-(1 << 23), min((1 << 23) - 1, lost))

    @property
    def jitter(self) -> int:
        return int(self._jitter)

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        self._lsr = ntp_middle32(sr.ntp_timestamp)
        self._lsr_time = now

    def report_block(self, now: float) -> ReportBlock | None:
        """The block for our next SR/RR; advances the A.3 interval counters."""
        if self.ssrc is None or not self._received:
            return None
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        self._last_fraction = fraction
        dlsr = 0
        if self._lsr_time is not None:
            dlsr = min(0xFFFFFFFF, int((now - self._lsr_time) * 65536))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=min(0xFFFFFFFF, self.jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )

    def snapshot(self) -> RtcpStats:
        to_ms = 1000.0 / self.clock_rate
        return RtcpStats(
            packets_received=self._received,
            packets_expected=self.expected,
            packets_lost=max(0, self.lost),
            fraction_lost=self._last_fraction / 256.0,
            jitter=self.jitter,
            jitter_ms=round(self._jitter * to_ms, 3),
            max_jitter_ms=round(self._max_jitter * to_ms, 3),
        )


def round_trip_time(block: ReportBlock, now: float) -> float | None:
    """RTT in seconds from a remote's report block about our stream
    (RFC 3550 §6.4.1: A - LSR - DLSR), or None without a previous SR."""
    if block.lsr == 0:
        return None
    arrival = ntp_middle32(ntp_from_unix(now))
    rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:
        return None
    return rtt / 65536.0


# --- timing ------------------------------------------------------------------

RTCP_MIN_TIME = 5.0
# e - 3/2: compensates the "timer reconsideration" bias (RFC 3550 A.7).
COMPENSATION = math.e - 1.5


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    rng: random.Random,
) -> float:
    """Seconds until the next RTCP report (RFC 3550 A.7)."""
    min_time = RTCP_MIN_TIME / 2 if initial else RTCP_MIN_TIME
    n = max(1, members)
    bandwidth = rtcp_bandwidth
    if senders <= members * 0.25:
        if we_sent:
            bandwidth *= 0.25
            n = max(1, senders)
        else:
            bandwidth *= 0.75
            n = max(1, members - senders)
    t = avg_rtcp_size * n / bandwidth if bandwidth > 0 else min_time
    t = max(t, min_time)
    t *= rng.random() + 0.5
    return t / COMPENSATION
