from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.sip.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStatistics,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_rtcp,
    round_trip_time,
    rtcp_interval,
    serialize_rtcp,
)

BLOCK = ReportBlock(
    ssrc=0x11223344,
    fraction_lost=64,
    cumulative_lost=-5,
    highest_seq=0x1_0005,
    jitter=77,
    lsr=0xAABBCCDD,
    dlsr=65536,
)


def test_compound_roundtrip() -> None:
    packets: list[RtcpPacket] = [
        SenderReport(
            ssrc=1,
            ntp_timestamp=ntp_from_unix(1_700_000_000.5),
            rtp_timestamp=160_000,
            packet_count=1000,
            octet_count=160_000,
            reports=[BLOCK],
        ),
        SourceDescription.cname(1, "voxgate@example"),
        Bye(sources=[1], reason="call ended"),
    ]
    wire = serialize_rtcp(packets)
    assert len(wire) % 4 == 0
    assert parse_rtcp(wire) == packets


def test_receiver_report_and_unknown_types() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(ssrc=9, reports=[BLOCK, BLOCK]),
        UnknownRtcp(packet_type=204, count=1, payload=b"name\x00\x00\x00\x01"),
        SourceDescription(
            chunks=[
                SdesChunk(ssrc=9, items=[(1, b"a"), (2, b"bob")]),
                SdesChunk(ssrc=10, items=[(1, b"abc")]),
            ]
        ),
        Bye(sources=[9, 10]),
    ]
    parsed = parse_rtcp(serialize_rtcp(packets))
    assert parsed == packets
    sdes = parsed[2]
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "a"


def test_wire_layout_of_rr() -> None:
    wire = serialize_rtcp([ReceiverReport(ssrc=0xDEADBEEF, reports=[BLOCK])])
    assert wire[:4] == bytes([0x81, 201, 0, 7])
    assert wire[4:8] == bytes.fromhex("deadbeef")
    # cumulative lost -5 is 24-bit two's complement
    assert wire[12:16] == bytes([64, 0xFF, 0xFF, 0xFB])


def test_parses_a_padded_last_packet() -> None:
    rr = serialize_rtcp([ReceiverReport(ssrc=5)])
    padded = bytes([0xA0]) + rr[1:3] + bytes([rr[3] + 1]) + rr[4:] + b"\x00\x00\x00\x04"
    (parsed,) = parse_rtcp(padded)
    assert parsed == ReceiverReport(ssrc=5)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x80\xc9", "too short"),
        (b"\x40\xc9\x00\x01\x00\x00\x00\x01", "version"),
        (b"\x80\xc9\x00\x05\x00\x00\x00\x01", "past the datagram"),
        (b"\x80\x10\x00\x01\x00\x00\x00\x01", "not RTCP"),
        (b"\x81\xc9\x00\x01\x00\x00\x00\x01", "report blocks"),
        (b"\x80\xc8\x00\x01\x00\x00\x00\x01", "SR too short"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x00", "padding"),
        (b"\xa0\xc9\x00\x01\x00\x00\x00\x01" + b"\x80\xc9\x00\x01\x00\x00\x00\x01", "padding"),
        (b"\x81\xca\x00\x01\x00\x00\x00\x01", "SDES"),
        (b"\x81\xca\x00\x02\x00\x00\x00\x01\x01\x09ab", "SDES item"),
        (b"\x82\xcb\x00\x01\x00\x00\x00\x01", "BYE sources"),
        (b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc", "BYE reason"),
        (b"\x80\xc9\x00\x01\x00\x00\x00\x01\x00", "trailing"),
    ],
)
def test_parse_rejects(wire: bytes, reason: str) -> None:
    with pytest.raises(RtcpError, match=reason):
        parse_rtcp(wire)


def test_serialize_rejects_bad_fields() -> None:
    with pytest.raises(RtcpError):
        serialize_rtcp([])
    with pytest.raises(RtcpError):
        serialize_rtcp([ReceiverReport(ssrc=1 << 32)])
    with pytest.raises(RtcpError):
        serialize_rtcp([ReceiverReport(ssrc=1, reports=[BLOCK] * 32)])
    bad = ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=1 << 23, highest_seq=0, jitter=0)
    with pytest.raises(RtcpError):
        serialize_rtcp([ReceiverReport(ssrc=1, reports=[bad])])
    with pytest.raises(RtcpError):
        serialize_rtcp([UnknownRtcp(packet_type=204, count=0, payload=b"abc")])


def test_ntp_conversion() -> None:
    ntp = ntp_from_unix(0.5)
    assert ntp >> 32 == 2208988800 and ntp & 0xFFFFFFFF == 1 << 31
    assert ntp_middle32(ntp) == ((2208988800 & 0xFFFF) << 16) | 0x8000


def test_round_trip_time() -> None:
    sr_time = 1_700_000_000.0
    lsr = ntp_middle32(ntp_from_unix(sr_time))
    # Remote held our SR for 0.25 s; the report arrives 0.4 s after we sent the SR.
    block = ReportBlock(
        ssrc=1,
        fraction_lost=0,
        cumulative_lost=0,
        highest_seq=0,
        jitter=0,
        lsr=lsr,
        dlsr=int(0.25 * 65536),
    )
    rtt = round_trip_time(block, sr_time + 0.4)
    assert rtt is not None and abs(rtt - 0.15) < 0.001
    assert (
        round_trip_time(
            ReportBlock(ssrc=1, fraction_lost=0, cumulative_lost=0, highest_seq=0, jitter=0),
            sr_time,
        )
        is None
    )


# --- reception statistics ------------------------------------------------------


def feed(
    stats: ReceptionStatistics, seqs: list[int], *, jitter: float = 0.0, seed: int = 1
) -> None:
    rng = random.Random(seed)
    for i, seq in enumerate(seqs):
        now = 100.0 + 0.02 * i + rng.uniform(0.0, jitter)
        stats.update(0xABC, seq % 65536, (seq * 160) % (1 << 32), now)


def test_no_loss_no_jitter() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(1000, 1500)))
    block = s.report_block(110.0)
    assert block is not None
    assert (block.fraction_lost, block.cumulative_lost, block.jitter) == (0, 0, 0)
    assert block.highest_seq == 1499 and block.ssrc == 0xABC
    snap = s.snapshot()
    assert snap.packets_received == 500 and snap.packets_expected == 500 and snap.packets_lost == 0


def test_loss_fraction_per_interval_and_cumulative() -> None:
    s = ReceptionStatistics()
    seqs = [q for q in range(0, 200) if q % 10 != 3]  # 10% loss
    feed(s, seqs)
    b1 = s.report_block(0)
    assert b1 is not None
    assert b1.cumulative_lost == 20
    assert b1.fraction_lost == (20 * 256) // 200  # 25
    # Next interval without loss.
    feed(s, list(range(200, 300)))
    b2 = s.report_block(0)
    assert b2 is not None and b2.fraction_lost == 0 and b2.cumulative_lost == 20
    assert s.snapshot().fraction_lost == 0.0


def test_sequence_wrap_counts_cycles() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(65500, 65600)))
    block = s.report_block(0)
    assert block is not None
    assert block.highest_seq == 65536 + 63
    assert block.cumulative_lost == 0


def test_duplicates_make_lost_negative_reordering_is_fine() -> None:
    s = ReceptionStatistics()
    feed(s, [1, 2, 4, 3, 5, 5, 6])
    block = s.report_block(0)
    assert block is not None and block.cumulative_lost == -1 and block.highest_seq == 6


def test_restart_of_numbering_needs_two_packets() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(100, 110)))
    assert not s.update(0xABC, 40000, 0, 101.0)
    assert s.update(0xABC, 40001, 160, 101.02)
    assert s.report_block(0) is not None
    assert s.snapshot().packets_received == 1  # counting restarted


def test_jitter_estimate_tracks_arrival_variation() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(2000)), jitter=0.03)
    snap = s.snapshot()
    # Uniform 0..30 ms: mean |D| is 10 ms.
    assert 7.0 < snap.jitter_ms < 13.0
    assert snap.jitter == pytest.approx(snap.jitter_ms * 8, abs=1)
    assert snap.max_jitter_ms >= snap.jitter_ms


def test_lsr_and_dlsr_from_sender_report() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(10)))
    ntp = ntp_from_unix(1_700_000_000.0)
    s.on_sender_report(
        SenderReport(ssrc=0xABC, ntp_timestamp=ntp, rtp_timestamp=0, packet_count=1, octet_count=1),
        50.0,
    )
    block = s.report_block(51.5)
    assert block is not None
    assert block.lsr == ntp_middle32(ntp)
    assert block.dlsr == int(1.5 * 65536)


def test_ssrc_change_resets() -> None:
    s = ReceptionStatistics()
    feed(s, list(range(10)))
    s.update(0x999, 5000, 0, 200.0)
    assert s.ssrc == 0x999 and s.snapshot().packets_received == 1


def test_report_block_none_before_packets() -> None:
    assert ReceptionStatistics().report_block(0.0) is None


def test_rtcp_interval_bounds() -> None:
    rng = random.Random(1)
    values = [
        rtcp_interval(
            members=2,
            senders=2,
            rtcp_bandwidth=500.0,
            we_sent=True,
            avg_rtcp_size=100.0,
            initial=False,
            rng=rng,
        )
        for _ in range(200)
    ]
    assert min(values) >= 5.0 * 0.5 / 1.21828 - 1e-9
    assert max(values) <= 5.0 * 1.5 / 1.21828 + 1e-9
    first = rtcp_interval(
        members=2,
        senders=1,
        rtcp_bandwidth=500.0,
        we_sent=False,
        avg_rtcp_size=100.0,
        initial=True,
        rng=rng,
    )
    assert first <= 2.5 * 1.5 / 1.21828 + 1e-9
    # Many members on a thin pipe: the interval grows past the minimum.
    big = rtcp_interval(
        members=1000,
        senders=1,
        rtcp_bandwidth=500.0,
        we_sent=False,
        avg_rtcp_size=100.0,
        initial=False,
        rng=rng,
    )
    assert big > 50.0


@given(st.binary(max_size=300))
def test_parse_never_raises_other_errors(data: bytes) -> None:
    with contextlib.suppress(RtcpError):
        packets = parse_rtcp(data)
        serialize_rtcp(packets) if packets else None


@given(
    st.lists(
        st.tuples(
            st.sampled_from([200, 201, 202, 203, 204]), st.integers(0, 31), st.binary(max_size=40)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_structured_garbage_never_raises_other_errors(parts: list[tuple[int, int, bytes]]) -> None:
    wire = b""
    for pt, count, body in parts:
        body = body + bytes(-len(body) % 4)
        wire += struct.pack("!BBH", 0x80 | count, pt, len(body) // 4) + body
    with contextlib.suppress(RtcpError):
        parse_rtcp(wire)
