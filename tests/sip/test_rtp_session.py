from __future__ import annotations

import itertools
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.media import g711
from voxgate.media.frame import Frame
from voxgate.sip.rtcp import Bye, ReceiverReport, SenderReport, parse_rtcp, serialize_rtcp
from voxgate.sip.rtp import RtpPacket
from voxgate.sip.rtp_session import (
    Datagram,
    DtmfReceived,
    MediaTimeout,
    RemoteBye,
    RemoteLatched,
    RtpSession,
    RtpSessionConfig,
    RtpSessionError,
)
from voxgate.sip.sdp import PCMA, PCMU, Codec, Direction, MediaParams

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "data"
A_ADDR = ("10.0.0.1", 20000)
B_ADDR = ("10.0.0.2", 30000)
T0 = 1000.0


def params(
    remote: tuple[str, int] | None,
    *,
    codec: Codec = PCMU,
    direction: Direction = Direction.SENDRECV,
    te_pt: int | None = 101,
) -> MediaParams:
    return MediaParams(
        codec=codec,
        telephone_event_pt=te_pt,
        direction=direction,
        remote_rtp=remote,
        remote_rtcp=None if remote is None else (remote[0], remote[1] + 1),
    )


def pair(codec: Codec = PCMU, **config: float) -> tuple[RtpSession, RtpSession]:
    cfg = RtpSessionConfig(**config)  # type: ignore[arg-type]
    a = RtpSession(params(B_ADDR, codec=codec), now=T0, config=cfg, rng=random.Random(1))
    b = RtpSession(params(A_ADDR, codec=codec), now=T0, config=cfg, rng=random.Random(2))
    return a, b


def tone(i: int) -> bytes:
    pcm = (np.sin((np.arange(160) + 160 * i) * 0.07) * 8000).astype(np.int16)
    return g711.ulaw_encode(pcm)


def test_audio_flows_and_is_played_in_order() -> None:
    a, b = pair()
    sent = [tone(i) for i in range(100)]
    played: list[bytes] = []
    for k in range(120):
        now = T0 + 0.02 * k
        if k < 100:
            dgram = a.send_audio(sent[k], now)
            assert dgram is not None and dgram.addr == B_ADDR and not dgram.rtcp
            events = b.receive(dgram.data, A_ADDR, now + 0.015)
            if k == 0:
                assert events == [RemoteLatched(A_ADDR, a.ssrc)]
        played.append(b.next_frame(now + 0.016))
    audio = [p for p in played if p != Frame.ulaw_silence()]
    # After the stream ends the buffer conceals two frames (faded repeats).
    assert audio[:100] == sent and len(audio) == 102
    s = b.stats()
    assert s.packets_received == 100 and s.packets_lost == 0
    assert a.stats().packets_sent == 100 and a.stats().octets_sent == 16000


def test_pcma_is_transcoded_both_ways() -> None:
    a, b = pair(codec=PCMA)
    frames = [tone(i) for i in range(20)]
    out: list[bytes] = []
    for k in range(40):
        now = T0 + 0.02 * k
        if k < 20:
            dgram = a.send_audio(frames[k], now)
            assert dgram is not None
            pkt = RtpPacket.parse(dgram.data)
            assert pkt.payload_type == 8 and pkt.payload == g711.ulaw_to_alaw(frames[k])
            b.receive(dgram.data, A_ADDR, now + 0.01)
        out.append(b.next_frame(now + 0.011))
    audio = [p for p in out if p != Frame.ulaw_silence()]
    assert audio[:20] == [g711.alaw_to_ulaw(g711.ulaw_to_alaw(f)) for f in frames]


def test_loss_is_concealed_and_counted() -> None:
    a, b = pair()
    out: list[bytes] = []
    for k in range(60):
        now = T0 + 0.02 * k
        if k < 50:
            dgram = a.send_audio(tone(k), now)
            assert dgram is not None
            if k not in (20, 30, 31):
                b.receive(dgram.data, A_ADDR, now + 0.01)
        out.append(b.next_frame(now + 0.011))
    assert b.stats().packets_lost == 3
    js = b.jitter_stats()
    assert js.lost_packets == 3 and js.concealed_frames >= 3
    assert all(len(f) == 160 for f in out)


def test_symmetric_rtp_latches_to_the_real_source() -> None:
    # The SDP says 192.0.2.1 (the remote's private address behind NAT).
    sdp_addr = ("192.0.2.1", 4000)
    nat_addr = ("203.0.113.5", 55555)
    b = RtpSession(params(sdp_addr), now=T0, rng=random.Random(3))
    first = b.send_audio(tone(0), T0)
    assert first is not None and first.addr == sdp_addr
    a = RtpSession(params(B_ADDR), now=T0, rng=random.Random(4))
    d = a.send_audio(tone(0), T0)
    assert d is not None
    assert b.receive(d.data, nat_addr, T0 + 0.01) == [RemoteLatched(nat_addr, a.ssrc)]
    out = b.send_audio(tone(1), T0 + 0.02)
    assert out is not None and out.addr == nat_addr
    assert b.remote_rtcp_addr == ("203.0.113.5", 55556)
    # Same SSRC from elsewhere: ignored.
    d2 = a.send_audio(tone(1), T0 + 0.02)
    assert d2 is not None
    assert b.receive(d2.data, ("198.51.100.9", 1), T0 + 0.03) == []
    assert b.foreign_packets == 1
    # A different SSRC from elsewhere while the latched source is live: ignored.
    intruder = RtpSession(params(B_ADDR), now=T0, rng=random.Random(5))
    d3 = intruder.send_audio(tone(0), T0 + 0.04)
    assert d3 is not None
    assert b.receive(d3.data, ("198.51.100.9", 1), T0 + 0.05) == []
    assert b.remote_addr == nat_addr
    # After silence from the latched source, a new SSRC re-latches.
    d4 = intruder.send_audio(tone(1), T0 + 3.0)
    assert d4 is not None
    assert b.receive(d4.data, ("198.51.100.9", 1), T0 + 3.0) == [
        RemoteLatched(("198.51.100.9", 1), intruder.ssrc)
    ]
    assert b.remote_addr == ("198.51.100.9", 1)


def test_garbage_and_unknown_payload_types_are_dropped() -> None:
    _, b = pair()
    assert b.receive(b"hello", A_ADDR, T0) == []
    other = RtpPacket(payload_type=18, sequence_number=1, timestamp=0, ssrc=9, payload=b"x")
    assert b.receive(other.serialize(), A_ADDR, T0) == []
    assert b.invalid_packets == 2
    assert not b.latched


def test_dtmf_out_and_in() -> None:
    a, b = pair()
    a.send_dtmf("1#", T0)
    with pytest.raises(Exception, match="DTMF digit"):
        a.send_dtmf("x", T0)
    received: list[str] = []
    te_packets: list[RtpPacket] = []
    audio_sent = 0
    for k in range(40):
        now = T0 + 0.01 * k
        if k % 2 == 0:
            d = a.send_audio(tone(k), now)
            if d is not None:
                audio_sent += 1
                b.receive(d.data, A_ADDR, now)
        for dg in a.datagrams_to_send(now):
            if dg.rtcp:
                continue
            pkt = RtpPacket.parse(dg.data)
            te_packets.append(pkt)
            for ev in b.receive(dg.data, A_ADDR, now):
                if isinstance(ev, DtmfReceived):
                    received.append(ev.event.digit)
    assert received == ["1", "#"]
    assert not a.dtmf_pending
    # 100 ms digits: start + update + 3 ends each, same timestamp within a digit.
    assert len(te_packets) == 10
    assert all(p.payload_type == 101 for p in te_packets)
    assert len({p.timestamp for p in te_packets[:5]}) == 1
    assert te_packets[0].marker and te_packets[5].marker
    assert te_packets[5].timestamp != te_packets[0].timestamp
    seqs = [p.sequence_number for p in te_packets]
    assert seqs == sorted(seqs)
    # Audio is held back while a digit plays (0-100 ms and 160-260 ms):
    # of 20 frames offered, those at 120, 140 and 280-380 ms go out.
    assert audio_sent == 8


def test_dtmf_requires_negotiation() -> None:
    s = RtpSession(params(B_ADDR, te_pt=None), now=T0)
    with pytest.raises(RtpSessionError):
        s.send_dtmf("1", T0)


def test_rtcp_reports_loss_jitter_and_rtt() -> None:
    a, b = pair(wallclock_offset=1_700_000_000.0)
    sent_rtcp = {"a": 0, "b": 0}
    for k in range(600):  # 12 s
        now = T0 + 0.02 * k
        d = a.send_audio(tone(k), now)
        assert d is not None
        if k % 50 != 7:  # 2% loss a -> b
            b.receive(d.data, A_ADDR, now + 0.02)
        back = b.send_audio(tone(k), now)
        assert back is not None
        a.receive(back.data, B_ADDR, now + 0.02)
        for name, src, dst, src_addr in (("a", a, b, A_ADDR), ("b", b, a, B_ADDR)):
            for dg in src.datagrams_to_send(now):
                assert dg.rtcp
                sent_rtcp[name] += 1
                kinds = [type(p) for p in parse_rtcp(dg.data)]
                assert kinds[0] in (SenderReport, ReceiverReport)
                dst.receive_rtcp(dg.data, (src_addr[0], src_addr[1] + 1), now + 0.02)
        b.next_frame(now)
        a.next_frame(now)
    assert sent_rtcp["a"] >= 2 and sent_rtcp["b"] >= 2
    sa, sb = a.stats(), b.stats()
    assert sb.packets_lost == 12 and sb.packets_received == 588
    # a learns b's view of a's stream from b's reports.
    assert sa.remote_packets_lost is not None and 6 <= sa.remote_packets_lost <= 12
    assert sa.rtt_ms is not None and 30.0 <= sa.rtt_ms <= 50.0
    assert sa.remote_jitter_ms is not None and sa.remote_jitter_ms < 1.0


def test_rtcp_interval_is_randomised_around_five_seconds() -> None:
    a, _ = pair()
    times: list[float] = []
    now = T0
    while now < T0 + 60:
        if a.datagrams_to_send(now):
            times.append(now)
        nxt = a.next_timeout()
        assert nxt is not None
        now = max(now + 0.001, nxt)
    gaps = [y - x for x, y in itertools.pairwise(times)]
    assert times[0] - T0 <= 2.5 * 1.5 / 1.2 + 0.01  # first report comes early
    assert all(1.9 <= g <= 6.3 for g in gaps)


def test_first_report_is_rr_without_sending() -> None:
    a, _ = pair()
    dgs = a.datagrams_to_send(T0 + 10)
    (dg,) = dgs
    assert dg.addr == (B_ADDR[0], B_ADDR[1] + 1)
    assert isinstance(parse_rtcp(dg.data)[0], ReceiverReport)


def test_bye_both_ways() -> None:
    a, b = pair()
    dg = a.bye(T0 + 1, "done")
    assert dg is not None and dg.rtcp
    packets = parse_rtcp(dg.data)
    assert isinstance(packets[-1], Bye) and packets[-1].sources == [a.ssrc]
    assert b.receive_rtcp(dg.data, (A_ADDR[0], A_ADDR[1] + 1), T0 + 1) == [
        RemoteBye(a.ssrc, "done")
    ]
    # RTCP muxed on the RTP port is recognised too.
    assert b.receive(dg.data, A_ADDR, T0 + 1) == [RemoteBye(a.ssrc, "done")]


def test_rtcp_from_another_host_is_ignored_once_latched() -> None:
    a, b = pair()
    d = a.send_audio(tone(0), T0)
    assert d is not None
    b.receive(d.data, A_ADDR, T0)
    bye = serialize_rtcp([Bye(sources=[a.ssrc])])
    assert b.receive_rtcp(bye, ("198.51.100.1", 9), T0) == []
    assert b.foreign_packets == 1


def test_inactivity_timeout_fires_once_and_not_on_hold() -> None:
    a, b = pair(inactivity_timeout=5.0)
    d = a.send_audio(tone(0), T0)
    assert d is not None
    b.receive(d.data, A_ADDR, T0 + 1.0)
    assert b.handle_timer(T0 + 5.9) == []
    deadline = b.next_timeout()
    assert deadline is not None and deadline <= T0 + 6.0
    events = b.handle_timer(T0 + 6.0)
    assert events == [MediaTimeout(5.0)]
    assert b.handle_timer(T0 + 20.0) == []
    # On hold we do not expect media, so no timeout.
    held = RtpSession(
        params(B_ADDR, direction=Direction.SENDONLY),
        now=T0,
        config=RtpSessionConfig(inactivity_timeout=5.0),
    )
    assert [e for e in held.handle_timer(T0 + 60) if isinstance(e, MediaTimeout)] == []


def test_hold_and_unhold_via_update_media() -> None:
    a, _ = pair()
    assert a.send_audio(tone(0), T0) is not None
    a.update_media(params(B_ADDR, direction=Direction.RECVONLY), T0 + 0.02)
    assert a.send_audio(tone(1), T0 + 0.04) is None
    a.update_media(params(None, direction=Direction.INACTIVE), T0 + 0.06)
    assert a.remote_addr is None and a.send_audio(tone(2), T0 + 0.08) is None
    moved = ("10.9.9.9", 40000)
    a.update_media(params(moved), T0 + 1.0)
    d = a.send_audio(tone(3), T0 + 1.0)
    assert d is not None and d.addr == moved
    pkt = RtpPacket.parse(d.data)
    assert pkt.marker and pkt.ssrc == a.ssrc  # new talkspurt, same stream


def test_codec_change_on_reinvite() -> None:
    a, _ = pair()
    a.send_audio(tone(0), T0)
    a.update_media(params(B_ADDR, codec=PCMA), T0 + 0.02)
    d = a.send_audio(tone(1), T0 + 0.02)
    assert d is not None and RtpPacket.parse(d.data).payload_type == 8


def test_send_audio_rejects_wrong_frame_size() -> None:
    a, _ = pair()
    with pytest.raises(RtpSessionError):
        a.send_audio(b"\xff" * 80, T0)


def test_dtmf_end_lost_is_reported_by_timer() -> None:
    a, b = pair()
    a.send_dtmf("7", T0)
    got: list[str] = []
    for k in range(20):
        now = T0 + 0.01 * k
        for dg in a.datagrams_to_send(now):
            pkt = RtpPacket.parse(dg.data)
            if pkt.payload[1] & 0x80:
                continue  # every end packet lost
            b.receive(dg.data, A_ADDR, now)
    for ev in b.handle_timer(T0 + 2.0):
        if isinstance(ev, DtmfReceived):
            got.append(ev.event.digit)
            assert not ev.event.ended
    assert got == ["7"]


# --- captured packets -------------------------------------------------------------


def read_pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    pos = 24
    out: list[tuple[float, bytes]] = []
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from(endian + "IIII", data, pos)
        pos += 16
        ip = data[pos + 14 : pos + incl]
        pos += incl
        udp = ip[(ip[0] & 0x0F) * 4 :]
        (length,) = struct.unpack_from("!H", udp, 4)
        out.append((sec + usec / 1e6, udp[8:length]))
    return out


def test_sipp_pcap_stream_is_played_back_exactly() -> None:
    captured = read_pcap_udp_payloads(TESTDATA / "sip" / "book_appointment.pcmu.pcap")
    b = RtpSession(params(("127.0.0.1", 6000)), now=T0, rng=random.Random(9))
    t_first = captured[0][0]
    pending = [(T0 + t - t_first + 0.005, d) for t, d in captured]
    played: list[bytes] = []
    i = 0
    for k in range(len(captured) + 20):
        now = T0 + 0.02 * k + 0.01
        while i < len(pending) and pending[i][0] <= now:
            b.receive(pending[i][1], ("127.0.0.1", 40000), pending[i][0])
            i += 1
        played.append(b.next_frame(now))
    expected = [RtpPacket.parse(d).payload for _, d in captured]
    assert any(played[off : off + len(expected)] == expected for off in range(10))
    assert b.stats().packets_received == 200 and b.stats().packets_lost == 0


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_receive_never_raises(datagrams: list[bytes]) -> None:
    _, b = pair()
    for i, d in enumerate(datagrams):
        b.receive(b"\x80" + d, A_ADDR, T0 + 0.02 * i)
        b.receive(d, A_ADDR, T0 + 0.02 * i)
        b.receive_rtcp(d, (A_ADDR[0], A_ADDR[1] + 1), T0 + 0.02 * i)
        assert len(b.next_frame(T0 + 0.02 * i)) == 160
        b.handle_timer(T0 + 0.02 * i)


def test_datagram_shape() -> None:
    d = Datagram(b"x", ("h", 1))
    assert d.rtcp is False
