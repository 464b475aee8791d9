from __future__ import annotations

import random
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from voxgate.media import g711
from voxgate.media.jitter import JitterBuffer, Playout, PlayoutKind, conceal_ulaw

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "data"
FRAME = 0.02


class Pkt:
    """One RTP packet as the test sends it: fields plus arrival time."""

    def __init__(
        self, seq: int, ts: int, arrival: float, ssrc: int = 1, payload: bytes = b""
    ) -> None:
        self.seq = seq & 0xFFFF
        self.ts = ts & 0xFFFFFFFF
        self.arrival = arrival
        self.ssrc = ssrc
        self.payload = payload or struct.pack("!I", seq) * 40


def stream(
    n: int,
    *,
    seq0: int = 1000,
    ts0: int = 0,
    t0: float = 0.0,
    delay: float = 0.01,
    ssrc: int = 1,
) -> list[Pkt]:
    return [Pkt(seq0 + i, ts0 + 160 * i, t0 + FRAME * i + delay, ssrc) for i in range(n)]


def run(
    jb: JitterBuffer, packets: Iterable[Pkt], *, ticks: int, t0: float = 0.0, phase: float = 0.005
) -> list[Playout]:
    """Deliver packets by arrival time and pop once per 20 ms tick."""
    pending = sorted(packets, key=lambda p: p.arrival)
    out: list[Playout] = []
    i = 0
    for k in range(ticks):
        now = t0 + phase + FRAME * k
        while i < len(pending) and pending[i].arrival <= now:
            p = pending[i]
            jb.push(
                sequence_number=p.seq,
                timestamp=p.ts,
                ssrc=p.ssrc,
                payload=p.payload,
                now=p.arrival,
            )
            i += 1
        out.append(jb.pop(now))
    return out


def audio_seqs(out: list[Playout]) -> list[int]:
    return [struct.unpack("!I", o.payload[:4])[0] for o in out if o.kind is PlayoutKind.AUDIO]


def kinds(out: list[Playout]) -> str:
    return "".join({"audio": "A", "concealed": "C", "silence": "S"}[o.kind.value] for o in out)


def body(out: list[Playout]) -> str:
    """Playout kinds without the start-up wait and the tail after the stream ends."""
    return kinds(out).lstrip("S").rstrip("CS")


def test_steady_stream_plays_everything_in_order_after_initial_delay() -> None:
    jb = JitterBuffer(initial_delay=0.06)
    out = run(jb, stream(100), ticks=110)
    k = kinds(out)
    assert k.startswith("SSS") and not k[:3].count("A")
    assert audio_seqs(out) == list(range(1000, 1100))
    assert body(out) == "A" * 100  # one gap-free run
    s = jb.stats()
    assert s.packets_played == 100 and s.lost_packets == 0 and s.late_packets == 0
    assert s.jitter_ms < 0.1


def test_reordered_and_duplicated_packets() -> None:
    pkts = stream(60)
    for i in range(10, 50, 4):  # swap neighbours: arrival order 11, 10, ...
        pkts[i].arrival, pkts[i + 1].arrival = pkts[i + 1].arrival + 0.001, pkts[i].arrival
    pkts.append(Pkt(1020, 160 * 20, pkts[20].arrival + 0.002))
    jb = JitterBuffer()
    out = run(jb, pkts, ticks=80)
    assert audio_seqs(out) == list(range(1000, 1060))
    s = jb.stats()
    assert s.duplicate_packets == 1 and s.lost_packets == 0
    assert body(out) == "A" * 60


def test_single_loss_is_concealed_with_a_faded_repeat() -> None:
    pkts = [p for p in stream(50) if p.seq != 1020]
    jb = JitterBuffer()
    out = run(jb, pkts, ticks=70)
    played = [o for o in out if o.kind is not PlayoutKind.SILENCE]
    idx = next(i for i, o in enumerate(played) if o.kind is PlayoutKind.CONCEALED)
    assert played[idx].payload == played[idx - 1].payload  # repeat of 1019
    assert played[idx].gain < 1.0
    assert audio_seqs(played[idx + 1 : idx + 2]) == [1021]
    s = jb.stats()
    assert s.lost_packets == 1
    assert body(out) == "A" * 20 + "C" + "A" * 29


def test_burst_loss_fades_then_silence() -> None:
    pkts = [p for p in stream(50) if not 1020 <= p.seq < 1025]
    jb = JitterBuffer(conceal_frames=2)
    out = run(jb, pkts, ticks=70)
    assert body(out) == "A" * 20 + "CCSSS" + "A" * 25
    gains = [o.gain for o in out if o.kind is PlayoutKind.CONCEALED]
    assert gains[0] > gains[1] > 0
    s = jb.stats()
    assert s.lost_packets == 5 and s.concealed_frames == 2 + 2  # and 2 at the end


def test_sequence_and_timestamp_wrap() -> None:
    pkts = stream(80, seq0=65500, ts0=0xFFFFFFFF - 160 * 30)
    jb = JitterBuffer()
    out = run(jb, pkts, ticks=90)
    assert body(out) == "A" * 80
    assert jb.stats().lost_packets == 0 and jb.stats().resyncs == 0


def test_wrap_with_reorder_across_the_boundary() -> None:
    pkts = stream(40, seq0=65530)
    # 65535 and 0 swapped in arrival.
    a, b = pkts[5], pkts[6]
    a.arrival, b.arrival = b.arrival + 0.001, a.arrival
    jb = JitterBuffer()
    out = run(jb, pkts, ticks=50)
    assert body(out) == "A" * 40
    assert jb.stats().resyncs == 0


def test_ssrc_change_resyncs() -> None:
    first = stream(30)
    second = stream(30, seq0=7, ts0=99999, t0=0.8, ssrc=2)
    jb = JitterBuffer()
    out = run(jb, first + second, ticks=90)
    assert jb.stats().resyncs == 1
    assert len(audio_seqs(out)) == 60
    assert audio_seqs(out)[30:] == list(range(7, 37))


def test_timestamp_jump_resyncs() -> None:
    first = stream(30)
    second = stream(30, seq0=1030, ts0=160 * 30 + 8000 * 3600, t0=0.8)
    jb = JitterBuffer()
    out = run(jb, first + second, ticks=90)
    assert jb.stats().resyncs == 1
    # The first packet after the jump only opens probation.
    assert audio_seqs(out) == [*range(1000, 1030), *range(1031, 1060)]


def test_stray_packet_with_odd_timestamp_does_not_resync() -> None:
    pkts = stream(40)
    pkts.append(Pkt(1021, 123456789, 0.45))
    jb = JitterBuffer()
    run(jb, pkts, ticks=50)
    s = jb.stats()
    assert s.resyncs == 0 and s.lost_packets == 0


def test_big_sequence_jump_needs_confirmation() -> None:
    jb = JitterBuffer()
    pkts = stream(20)
    stray = Pkt(30000, 160 * 20, 0.41)  # lone packet far away: ignored
    rest = stream(20, seq0=1020, ts0=160 * 20, t0=0.4)
    out = run(jb, [*pkts, stray, *rest], ticks=50)
    assert jb.stats().resyncs == 0
    assert audio_seqs(out) == list(range(1000, 1040))
    # Two in a row restart the stream.
    jb2 = JitterBuffer()
    restart = stream(20, seq0=40000, ts0=160 * 20, t0=0.6)
    out2 = run(jb2, [*stream(20), *restart], ticks=60)
    assert jb2.stats().resyncs == 1
    # The first packet of the new numbering only opens probation.
    assert audio_seqs(out2) == [*range(1000, 1020), *range(40001, 40020)]


def test_sender_pause_plays_silence_not_loss() -> None:
    talk1 = stream(25)
    # 1 s pause: seq continues, timestamp follows the clock.
    talk2 = stream(25, seq0=1025, ts0=160 * 25 + 8000, t0=0.5 + 1.0)
    jb = JitterBuffer(conceal_frames=2)
    out = run(jb, talk1 + talk2, ticks=120)
    assert audio_seqs(out) == list(range(1000, 1050))
    s = jb.stats()
    # The buffer cannot tell a pause from loss until the next packet shows the
    # timestamp jump, so it spends its concealment frames, then plays silence;
    # nothing counts as lost.
    assert s.lost_packets == 0
    assert body(out) == "A" * 25 + "CC" + "S" * 48 + "A" * 25


def test_pause_with_next_packet_buffered_is_pure_silence() -> None:
    talk1 = stream(10)
    talk2 = [Pkt(1010, 160 * 10 + 160 * 5, 0.2 + 0.001 + 0.01)]  # arrives early, 100 ms ahead
    talk2 += stream(10, seq0=1011, ts0=160 * 16, t0=0.32)
    jb = JitterBuffer()
    out = run(jb, talk1 + talk2, ticks=40)
    assert body(out) == "A" * 10 + "S" * 5 + "A" * 11
    assert jb.stats().lost_packets == 0


def test_late_packet_beyond_the_slot_is_dropped() -> None:
    pkts = stream(40)
    pkts[20].arrival += 0.5  # far too late
    jb = JitterBuffer(max_delay=0.2)
    out = run(jb, pkts, ticks=60)
    assert 1020 not in audio_seqs(out)
    s = jb.stats()
    assert s.late_packets == 1 and s.lost_packets == 1


def test_late_packet_recovery_grows_the_delay() -> None:
    pkts = stream(60)
    for p in pkts[20:]:
        p.arrival += 0.1  # a route change adds 100 ms for the rest of the call
    jb = JitterBuffer(initial_delay=0.04, min_delay=0.02, max_delay=0.3)
    out = run(jb, pkts, ticks=90)
    assert audio_seqs(out) == list(range(1000, 1060))  # nothing thrown away
    s = jb.stats()
    assert s.delay_increases == 1 and s.lost_packets == 0
    assert body(out) == "A" * 20 + "CCS" + "A" * 40


def test_adapts_to_jitter_then_shrinks_when_it_calms() -> None:
    rng = random.Random(42)
    noisy = stream(500)
    for p in noisy:
        p.arrival += rng.uniform(0.0, 0.08)
    calm = stream(1500, seq0=1500, ts0=500 * 160, t0=10.0)
    jb = JitterBuffer(initial_delay=0.04, min_delay=0.02, max_delay=0.3)
    out_noisy = run(jb, noisy, ticks=505)
    noisy_stats = jb.stats()
    assert 15.0 < noisy_stats.jitter_ms < 35.0
    assert noisy_stats.target_delay_ms > 40.0
    # Delay grew through recoveries; losses stay a small fraction.
    assert noisy_stats.delay_increases >= 1
    assert noisy_stats.lost_packets < 500 * 0.08
    assert len(audio_seqs(out_noisy)) > 500 * 0.9
    out_calm = run(jb, calm, ticks=1500, t0=10.1)
    calm_stats = jb.stats()
    assert calm_stats.jitter_ms < 2.0
    assert calm_stats.dropped_frames >= 1
    assert calm_stats.delay_ms < noisy_stats.delay_ms
    assert kinds(out_calm[-300:-100]) == "A" * 200


def test_max_packets_bounds_memory() -> None:
    jb = JitterBuffer(max_packets=10)
    for i in range(50):
        jb.push(sequence_number=i, timestamp=160 * i, ssrc=1, payload=b"x", now=0.0)
    assert len(jb) == 10
    assert jb.stats().overflow_packets == 40


def test_pop_before_any_packet_is_silence() -> None:
    jb = JitterBuffer()
    assert all(jb.pop(0.02 * k).kind is PlayoutKind.SILENCE for k in range(10))


def test_bad_configuration() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_delay=0.1, initial_delay=0.05)
    with pytest.raises(ValueError):
        JitterBuffer(conceal_frames=9)


def test_conceal_ulaw_attenuates() -> None:
    pcm = (np.sin(np.arange(160) / 5.0) * 10000).astype(np.int16)
    faded = g711.ulaw_decode(conceal_ulaw(g711.ulaw_encode(pcm), 0.5))
    ratio = float(np.abs(faded.astype(np.float64)).sum() / np.abs(pcm.astype(np.float64)).sum())
    assert 0.45 < ratio < 0.55


# --- captured packets ------------------------------------------------------------


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


def rtp_fields(datagram: bytes) -> tuple[int, int, int, bytes]:
    _, _, seq, ts, ssrc = struct.unpack_from("!BBHII", datagram)
    return seq, ts, ssrc, datagram[12:]


def test_conversation_pcap_through_jitter_and_reordering() -> None:
    captured = read_pcap_udp_payloads(TESTDATA / "sip" / "conversation.pcmu.pcap")
    assert len(captured) == 819
    t_first = captured[0][0]
    rng = random.Random(11)
    pkts: list[Pkt] = []
    for t, datagram in captured:
        seq, ts, ssrc, payload = rtp_fields(datagram)
        # Up to 30 ms of network jitter reorders neighbours now and then.
        pkts.append(Pkt(seq, ts, t - t_first + 0.01 + rng.uniform(0.0, 0.03), ssrc, payload))
    jb = JitterBuffer(initial_delay=0.06, min_delay=0.04, max_delay=0.3)
    out = run(jb, pkts, ticks=819 + 30)
    played = [o.payload for o in out if o.kind is PlayoutKind.AUDIO]
    assert played == [p.payload for p in sorted(pkts, key=lambda p: p.seq)]
    s = jb.stats()
    assert s.lost_packets == 0 and s.late_packets == 0
    assert 3.0 < s.jitter_ms < 15.0


def test_conversation_pcap_with_loss() -> None:
    captured = read_pcap_udp_payloads(TESTDATA / "sip" / "conversation.pcmu.pcap")
    rng = random.Random(5)
    kept: list[Pkt] = []
    dropped = 0
    for t, datagram in captured:
        seq, ts, ssrc, payload = rtp_fields(datagram)
        if rng.random() < 0.03:
            dropped += 1
            continue
        kept.append(Pkt(seq, ts, t - captured[0][0] + 0.01, ssrc, payload))
    jb = JitterBuffer()
    out = run(jb, kept, ticks=819 + 10)
    s = jb.stats()
    assert sum(o.kind is PlayoutKind.AUDIO for o in out) == s.packets_played
    assert dropped > 10
    assert s.packets_played + s.dropped_frames == len(kept)
    assert s.lost_packets == dropped
    assert dropped <= s.concealed_frames <= dropped + 2  # + the tail after the last packet
