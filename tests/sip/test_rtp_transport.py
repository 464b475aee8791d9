"""RtpClock: one tick for all calls, a broken call dropped alone, apart from the FrameClock."""

from __future__ import annotations

import pytest

from voxgate.media.pacer import Pacer
from voxgate.sip.rtp_transport import RtpClock, _rephase


class Member:
    def __init__(self, fail: bool = False) -> None:
        self.ticks: list[float] = []
        self.fail = fail

    def tick(self, now: float) -> None:
        if self.fail:
            raise RuntimeError("broken call")
        self.ticks.append(now)


def test_tick_visits_members_and_drops_a_broken_one() -> None:
    clock = RtpClock()
    good, bad = Member(), Member(fail=True)
    clock.add(good)
    clock.add(bad)
    clock.tick(1.0)
    clock.tick(1.02)
    assert good.ticks == [1.0, 1.02] and len(clock) == 1
    clock.remove(good)
    assert len(clock) == 0


@pytest.mark.parametrize("mine", [10.0, 10.001, 10.013, 10.0199])
def test_rephase_moves_half_an_interval_after_the_other_clock(mine: float) -> None:
    other = Pacer(10.0)  # next deadline 10.000, then every 20 ms
    pacer = Pacer(mine)
    _rephase(pacer, other, now=9.995)
    assert pacer.next_deadline() == pytest.approx(10.010)


def test_rephase_leaves_a_grid_already_apart_and_never_schedules_in_the_past() -> None:
    other = Pacer(10.0)
    pacer = Pacer(10.011)  # within a tenth of an interval of the target
    _rephase(pacer, other, now=9.0)
    assert pacer.next_deadline() == 10.011
    pacer = Pacer(50.0)
    _rephase(pacer, other, now=50.0)
    deadline = pacer.next_deadline()
    assert 50.0 <= deadline <= 50.02
    assert (deadline - 10.010) % 0.02 == pytest.approx(0.0, abs=1e-9) or (
        deadline - 10.010
    ) % 0.02 == pytest.approx(0.02, abs=1e-9)
