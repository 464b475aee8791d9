"""Admission and the live-call registry, on a fake clock."""

from __future__ import annotations

import pytest

from voxgate.server.call_control import Admission, CallControl
from voxgate.tenants.models import Quotas


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_control(clock: FakeClock) -> CallControl:
    return CallControl(clock=clock, wall=clock, reservation_ttl=60.0)


def test_concurrency_and_rate_limits() -> None:
    clock = FakeClock()
    control = make_control(clock)
    quotas = Quotas(max_concurrent_calls=2, max_cps=1)
    assert control.admit("t1", "a", "sip", "c1", quotas) is Admission.ADMITTED
    # Same second: the bucket (1 call/s) is empty.
    assert control.admit("t1", "a", "sip", "c2", quotas) is Admission.BUSY_CPS
    clock.now += 1.0
    assert control.admit("t1", "a", "sip", "c2", quotas) is Admission.ADMITTED
    clock.now += 1.0
    assert control.admit("t1", "a", "sip", "c3", quotas) is Admission.BUSY_CONCURRENCY
    # Another tenant has its own counters.
    assert control.admit("t2", "a", "sip", "c4", quotas) is Admission.ADMITTED
    control.release("c1")
    assert control.admit("t1", "a", "sip", "c3", quotas) is Admission.ADMITTED
    assert control.live_count("t1") == 2


def test_rekey_moves_the_reservation_without_a_new_token() -> None:
    clock = FakeClock()
    control = make_control(clock)
    quotas = Quotas(max_concurrent_calls=1, max_cps=1)
    assert control.admit("t1", "a", "twilio", "out_1", quotas) is Admission.ADMITTED
    control.rekey("out_1", "CA123")
    assert control.get("out_1") is None
    live = control.get("CA123")
    assert live is not None and live.call_id == "CA123" and live.tenant_id == "t1"
    assert control.live_count("t1") == 1
    # Re-admitting under the new id is idempotent and spends nothing.
    assert control.admit("t1", "a", "twilio", "CA123", quotas) is Admission.ADMITTED
    control.release("CA123")
    assert control.live_count("t1") == 0
    with pytest.raises(KeyError):
        control.rekey("missing", "CA999")


def test_reservations_expire_when_media_never_connects() -> None:
    clock = FakeClock()
    control = make_control(clock)
    quotas = Quotas(max_concurrent_calls=1, max_cps=10)
    assert control.admit("t1", "a", "twilio", "c1", quotas) is Admission.ADMITTED
    assert control.admit("t1", "a", "twilio", "c2", quotas) is Admission.BUSY_CONCURRENCY
    clock.now += 61.0
    assert control.admit("t1", "a", "twilio", "c2", quotas) is Admission.ADMITTED
    assert control.get("c1") is None
