from __future__ import annotations

import random

import pytest

from voxgate.media.pacer import Pacer, PacerError


def test_on_time_ticks_emit_one_frame_each() -> None:
    pacer = Pacer(100.0)
    now = 100.0
    sent = 0
    for _ in range(500):
        sent += pacer.poll(now)
        now = pacer.next_deadline()
    assert sent == 500
    assert pacer.stats.resyncs == 0
    assert abs(pacer.next_deadline() - (100.0 + 500 * 0.020)) < 1e-9


def test_nothing_due_before_deadline() -> None:
    pacer = Pacer(10.0)
    assert pacer.poll(10.0) == 1
    assert pacer.poll(10.019) == 0
    assert pacer.next_deadline() == pytest.approx(10.020)


def test_small_jitter_does_not_drift() -> None:
    # Waking 1-7 ms late every time must not push the schedule later.
    pacer = Pacer(0.0)
    for k in range(1000):
        assert pacer.poll(k * 0.020 + 0.001 + (k % 7) * 0.001) == 1
    assert pacer.next_deadline() == pytest.approx(1000 * 0.020)
    assert max(pacer.drain_lateness()) == pytest.approx(0.007)


def test_moderate_lateness_catches_up_without_burst() -> None:
    pacer = Pacer(0.0, max_catchup=2)
    assert pacer.poll(0.0) == 1
    # 45 ms late for the 20 ms deadline: owes 3 frames, sends at most 2.
    assert pacer.poll(0.065) == 2
    # The grid stays at 20 ms steps and never asks for more than max_catchup.
    counts = [pacer.poll(0.065 + i * 0.005) for i in range(1, 40)]
    assert max(counts) <= 1
    assert pacer.stats.resyncs == 0


def test_stall_resynchronises_instead_of_bursting() -> None:
    pacer = Pacer(0.0, resync_after=0.060)
    assert pacer.poll(0.0) == 1
    # Loop stalled 500 ms: one frame, new grid from now.
    assert pacer.poll(0.520) == 1
    assert pacer.stats.resyncs == 1
    assert pacer.stats.skipped_slots >= 24
    assert pacer.next_deadline() == pytest.approx(0.540)
    assert pacer.poll(0.530) == 0
    assert pacer.poll(0.540) == 1


def test_frames_over_any_window_never_exceed_real_time_plus_catchup() -> None:
    # Random wake-ups: no poll sends more than max_catchup, a 100 ms window
    # holds at most its 5 real-time frames plus one catch-up's worth, and the
    # total never runs ahead of real time.
    rng = random.Random(3)
    pacer = Pacer(0.0)
    now = 0.0
    log: list[tuple[float, int]] = []
    for _ in range(800):
        now += rng.choice([0.001, 0.005, 0.019, 0.021, 0.030, 0.045, 0.2])
        n = pacer.poll(now)
        if n:
            log.append((now, n))
    for i, (t0, _) in enumerate(log):
        window = sum(n for t, n in log[i:] if t < t0 + 0.1)
        assert window <= 5 + 3
    assert max(n for _, n in log) <= 2
    assert sum(n for _, n in log) <= now / 0.020 + 1


def test_lateness_samples_recorded_and_drained() -> None:
    pacer = Pacer(0.0)
    pacer.poll(0.003)
    pacer.poll(0.025)
    samples = pacer.drain_lateness()
    assert samples == [pytest.approx(0.003), pytest.approx(0.005)]
    assert pacer.drain_lateness() == []
    assert pacer.stats.max_lateness == pytest.approx(0.005)


def test_restart_moves_grid() -> None:
    pacer = Pacer(0.0)
    pacer.poll(0.0)
    pacer.restart(5.0)
    assert pacer.next_deadline() == 5.0
    assert pacer.poll(5.0) == 1
    assert pacer.stats.resyncs == 0


def test_bad_parameters() -> None:
    with pytest.raises(PacerError):
        Pacer(0.0, interval=0)
    with pytest.raises(PacerError):
        Pacer(0.0, resync_after=0.01)
    with pytest.raises(PacerError):
        Pacer(0.0, max_catchup=0)
