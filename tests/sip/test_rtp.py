from __future__ import annotations

import contextlib
import itertools
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.sip.rtp import (
    RtpError,
    RtpExtension,
    RtpPacket,
    RtpSender,
    SequenceUnwrapper,
    TimestampUnwrapper,
    is_rtcp,
    seq_add,
    seq_diff,
    seq_lt,
    ts_add,
    ts_diff,
)

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "data"


def read_pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """Tiny classic-libpcap reader: Ethernet/IPv4/UDP payloads with capture times."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic == b"\xd4\xc3\xb2\xa1" else ">"
    assert struct.unpack(endian + "I", magic)[0] == 0xA1B2C3D4
    pos = 24
    out: list[tuple[float, bytes]] = []
    while pos + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from(endian + "IIII", data, pos)
        pos += 16
        frame = data[pos : pos + incl]
        pos += incl
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        udp = ip[ihl:]
        (ulen,) = struct.unpack_from("!H", udp, 4)
        out.append((sec + usec / 1e6, udp[8:ulen]))
    return out


def test_roundtrip_minimal() -> None:
    p = RtpPacket(payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"abc")
    wire = p.serialize()
    assert wire == bytes([0x80, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]) + b"abc"
    assert RtpPacket.parse(wire) == p


def test_roundtrip_all_fields() -> None:
    p = RtpPacket(
        payload_type=101,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        payload=b"\x01\x02\x03\x04",
        marker=True,
        csrcs=(1, 2, 3),
        extension=RtpExtension(0xBEDE, b"\x10\xff\x00\x00"),
        padding=4,
    )
    wire = p.serialize()
    assert wire[0] == 0x80 | 0x20 | 0x10 | 3
    assert wire[1] == 0x80 | 101
    assert wire[-1] == 4
    assert RtpPacket.parse(wire) == p


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "too short"),
        (b"\x80\x00" + bytes(9), "too short"),
        (b"\x40\x00" + bytes(10), "version"),
        (b"\x80\xc8" + bytes(10), "reserved"),  # RTCP SR
        (b"\x81\x00" + bytes(10), "CSRC"),
        (b"\x90\x00" + bytes(10), "extension"),
        (b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x02" + bytes(4), "extension data"),
        (b"\xa0\x00" + bytes(10) + b"\x00", "zero padding"),
        (b"\xa0\x00" + bytes(10) + b"ab\x09", "padding count"),
    ],
)
def test_parse_rejects(wire: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        RtpPacket.parse(wire)


def test_serialize_rejects_out_of_range() -> None:
    with pytest.raises(RtpError):
        RtpPacket(payload_type=128, sequence_number=0, timestamp=0, ssrc=0).serialize()
    with pytest.raises(RtpError):
        RtpPacket(payload_type=0, sequence_number=70000, timestamp=0, ssrc=0).serialize()
    with pytest.raises(RtpError):
        RtpPacket(
            payload_type=0, sequence_number=0, timestamp=0, ssrc=0, csrcs=(0,) * 16
        ).serialize()
    with pytest.raises(RtpError):
        RtpExtension(0, b"abc")


def test_is_rtcp() -> None:
    assert is_rtcp(b"\x80\xc8\x00\x06")
    assert is_rtcp(b"\x81\xc9\x00\x07")
    assert not is_rtcp(b"\x80\x00\x00\x01")
    assert not is_rtcp(b"\x80")


def test_seq_arithmetic_wraps() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(0x8000, 0) == -0x8000
    assert seq_lt(65535, 0)
    assert not seq_lt(0, 65535)
    assert seq_add(65535, 2) == 1
    assert ts_diff(0, 0xFFFFFF60) == 160
    assert ts_diff(0xFFFFFF60, 0) == -160
    assert ts_add(0xFFFFFFFF, 161) == 160


@given(st.integers(0, 65535), st.integers(-32768, 32767))
def test_seq_diff_inverse_of_add(a: int, n: int) -> None:
    assert seq_diff(seq_add(a, n), a) == n


def test_sequence_unwrapper_across_wrap_and_reorder() -> None:
    u = SequenceUnwrapper()
    first = u.unwrap(65534)
    assert u.unwrap(65535) == first + 1
    assert u.unwrap(1) == first + 3
    assert u.unwrap(0) == first + 2  # late packet from before... the wrap boundary
    assert u.unwrap(65533) == first - 1  # older than the first, not a cycle ahead
    assert u.highest == first + 3


def test_timestamp_unwrapper() -> None:
    u = TimestampUnwrapper()
    a = u.unwrap(0xFFFFFF00)
    assert u.unwrap(0x60) - a == 0x160
    assert u.unwrap(0xFFFFFFA0) - a == 0xA0


def test_sender_numbers_frames_and_marks_talkspurts() -> None:
    s = RtpSender(0, rng=random.Random(7))
    ssrc, seq0 = s.ssrc, s.next_sequence_number
    pkts = [RtpPacket.parse(s.send_frame(b"\xff" * 160, now=10.0 + 0.02 * i)) for i in range(5)]
    assert [p.sequence_number for p in pkts] == [seq_add(seq0, i) for i in range(5)]
    assert all(ts_diff(b.timestamp, a.timestamp) == 160 for a, b in itertools.pairwise(pkts))
    assert [p.marker for p in pkts] == [True, False, False, False, False]
    assert {p.ssrc for p in pkts} == {ssrc}
    # Pacing jitter of a few ms does not start a new talkspurt.
    p5 = RtpPacket.parse(s.send_frame(b"\xff" * 160, now=10.0 + 0.02 * 5 + 0.008))
    assert not p5.marker and ts_diff(p5.timestamp, pkts[-1].timestamp) == 160
    # One second of silence: timestamp follows the clock, marker set, seq contiguous.
    p6 = RtpPacket.parse(s.send_frame(b"\xff" * 160, now=11.108))
    assert p6.marker
    assert ts_diff(p6.timestamp, p5.timestamp) == 8000
    assert p6.sequence_number == seq_add(seq0, 6)
    assert s.packets_sent == 7 and s.octets_sent == 7 * 160
    assert s.timestamp_at(11.108 + 0.5) == ts_add(p6.timestamp, 4000)


def test_sender_random_start_values_differ() -> None:
    a = RtpSender(0, rng=random.Random(1))
    b = RtpSender(0, rng=random.Random(2))
    assert (a.ssrc, a.next_sequence_number) != (b.ssrc, b.next_sequence_number)


def test_parses_shared_pcap() -> None:
    packets = read_pcap_udp_payloads(TESTDATA / "sip" / "conversation.pcmu.pcap")
    assert len(packets) == 819
    parsed = [RtpPacket.parse(p) for _, p in packets]
    assert parsed[0].marker and parsed[0].sequence_number == 1000 and parsed[0].timestamp == 0
    for i, p in enumerate(parsed):
        assert p.payload_type == 0 and p.ssrc == 0x5EED0001 and len(p.payload) == 160
        assert p.sequence_number == 1000 + i and p.timestamp == 160 * i
        assert RtpPacket.parse(p.serialize()) == p


@given(st.binary(max_size=200))
def test_parse_never_raises_other_errors(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(p.serialize()) == p


@given(st.binary(min_size=12, max_size=80).map(lambda b: bytes([0x80 | (b[0] & 0x3F)]) + b[1:]))
def test_parse_v2_headers_never_raise_other_errors(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        RtpPacket.parse(data)
