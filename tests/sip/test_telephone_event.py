from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.sip.telephone_event import (
    DtmfReceiver,
    TelephoneEvent,
    TelephoneEventError,
    digit_to_event,
    dtmf_packets,
    event_to_digit,
)


def test_payload_roundtrip_and_layout() -> None:
    t = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    wire = t.serialize()
    assert wire == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(wire) == t
    # The reserved bit is ignored on receipt.
    assert TelephoneEvent.parse(bytes([1, 0x40 | 7, 0, 160])).volume == 7


def test_parse_rejects_short_payload() -> None:
    with pytest.raises(TelephoneEventError):
        TelephoneEvent.parse(b"\x01\x02")


def test_serialize_rejects_out_of_range() -> None:
    with pytest.raises(TelephoneEventError):
        TelephoneEvent(event=1, volume=64).serialize()
    with pytest.raises(TelephoneEventError):
        TelephoneEvent(event=1, duration=70000).serialize()


def test_digit_mapping() -> None:
    assert [digit_to_event(d) for d in "0189*#AbCD"] == [0, 1, 8, 9, 10, 11, 12, 13, 14, 15]
    assert event_to_digit(11) == "#" and event_to_digit(16) is None
    with pytest.raises(TelephoneEventError):
        digit_to_event("x")
    with pytest.raises(TelephoneEventError):
        digit_to_event("12")


def test_sender_plan() -> None:
    plan = dtmf_packets("5", duration_ms=120, interval_ms=50)
    events = [TelephoneEvent.parse(p.payload) for p in plan]
    assert [p.at for p in plan] == [0.0, 0.05, 0.1, 0.12, 0.12, 0.12]
    assert [p.marker for p in plan] == [True, False, False, False, False, False]
    assert [e.duration for e in events] == [400, 800, 960, 960, 960, 960]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert {e.event for e in events} == {5}


def test_sender_plan_validation() -> None:
    with pytest.raises(TelephoneEventError):
        dtmf_packets("1", duration_ms=10)
    with pytest.raises(TelephoneEventError):
        dtmf_packets("1", interval_ms=5)
    with pytest.raises(TelephoneEventError):
        dtmf_packets("Z")


def send_digit(
    rx: DtmfReceiver, digit: str, ts: int, t0: float, *, drop_ends: int = 0
) -> list[str]:
    out: list[str] = []
    plan = dtmf_packets(digit, duration_ms=100)
    ends_seen = 0
    for p in plan:
        if p.end:
            ends_seen += 1
            if ends_seen <= drop_ends:
                continue
        out += [e.digit for e in rx.receive(ts, p.payload, t0 + p.at)]
    return out


def test_receiver_one_event_per_digit_despite_three_ends() -> None:
    rx = DtmfReceiver()
    digits: list[str] = []
    for i, d in enumerate("1234#"):
        digits += send_digit(rx, d, ts=1000 + 8000 * i, t0=10.0 + i)
    assert digits == list("1234#")


def test_receiver_reports_duration_and_volume() -> None:
    rx = DtmfReceiver()
    events = []
    for p in dtmf_packets("9", duration_ms=240, volume=12):
        events += rx.receive(555, p.payload, 0.0 + p.at)
    (e,) = events
    assert (e.digit, e.event, e.duration_ms, e.volume, e.timestamp, e.ended) == (
        "9",
        9,
        240,
        12,
        555,
        True,
    )


def test_receiver_survives_lost_first_packets_and_lost_end_packets() -> None:
    rx = DtmfReceiver()
    plan = dtmf_packets("7", duration_ms=200)
    # First two packets lost; first two end packets lost.
    got = []
    for p in plan[2:]:
        got += rx.receive(42, p.payload, 1.0 + p.at)
    assert [e.digit for e in got] == ["7"]
    assert got[0].duration_ms == 200
    assert send_digit(rx, "8", ts=9000, t0=3.0, drop_ends=2) == ["8"]


def test_receiver_all_ends_lost_then_next_digit() -> None:
    rx = DtmfReceiver()
    assert send_digit(rx, "1", ts=100, t0=0.0, drop_ends=3) == []
    events = []
    for p in dtmf_packets("2"):
        events += rx.receive(900, p.payload, 0.3 + p.at)
    assert [(e.digit, e.ended) for e in events] == [("1", False), ("2", True)]


def test_receiver_timeout_when_ends_lost() -> None:
    rx = DtmfReceiver(timeout=0.5)
    assert send_digit(rx, "3", ts=100, t0=0.0, drop_ends=3) == []
    deadline = rx.next_timeout()
    assert deadline is not None and abs(deadline - 0.55) < 1e-9
    assert rx.poll(0.5) == []
    (e,) = rx.poll(0.56)
    assert (e.digit, e.ended, e.duration_ms) == ("3", False, 100)
    assert rx.next_timeout() is None
    assert rx.poll(5.0) == []


def test_receiver_ignores_late_straggler_of_finished_event() -> None:
    rx = DtmfReceiver()
    plan = dtmf_packets("4")
    assert send_digit(rx, "4", ts=777, t0=0.0) == ["4"]
    assert rx.receive(777, plan[1].payload, 0.3) == []  # reordered continuation
    assert rx.next_timeout() is None


def test_same_digit_twice_is_two_events() -> None:
    rx = DtmfReceiver()
    assert send_digit(rx, "5", ts=100, t0=0.0) + send_digit(rx, "5", ts=2000, t0=0.3) == ["5", "5"]


def test_flash_and_other_events() -> None:
    rx = DtmfReceiver()
    flash = TelephoneEvent(event=16, end=True, duration=800).serialize()
    other = TelephoneEvent(event=70, end=True, duration=800).serialize()
    assert [e.digit for e in rx.receive(1, flash, 0.0)] == ["!"]
    assert [e.digit for e in rx.receive(2, other, 0.0)] == ["?"]


@given(st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=8)), max_size=30))
def test_receiver_only_raises_its_error(packets: list[tuple[int, bytes]]) -> None:
    rx = DtmfReceiver()
    for i, (ts, payload) in enumerate(packets):
        with contextlib.suppress(TelephoneEventError):
            for e in rx.receive(ts, payload, i * 0.02):
                assert e.duration_ms >= 0
        rx.poll(i * 0.02)
