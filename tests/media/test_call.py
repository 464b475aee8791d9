from __future__ import annotations

import pytest

from voxgate.media.call import (
    TRANSITIONS,
    Call,
    CallState,
    CallTrigger,
    EndReason,
    InvalidCallTransition,
)


def _call() -> Call:
    return Call(
        "c1",
        tenant_id="t",
        agent_id="a",
        provider="twilio",
        from_number="+1555",
        to_number="+1666",
        now=100.0,
    )


def _live(call: Call) -> bool:
    # A call, not an attribute read, so the type checker does not carry
    # narrowing across the state changes in between.
    return call.is_live


def test_happy_path_timestamps_and_events() -> None:
    call = _call()
    assert [e.kind for e in call.events] == ["ringing"]
    assert _live(call)
    call.answer(101.0)
    call.hangup(EndReason.CALLER_HANGUP, 130.0)
    assert not _live(call)
    call.closed(131.0)
    assert call.state.value == "ended"
    assert call.end_reason is EndReason.CALLER_HANGUP
    assert (call.answered_at, call.ending_at, call.ended_at) == (101.0, 130.0, 131.0)
    assert call.duration == 30.0
    assert [e.kind for e in call.events] == ["ringing", "connected", "ending", "ended"]


def test_first_reason_sticks_and_abrupt_close_defaults_to_error() -> None:
    call = _call()
    call.answer(1.0)
    call.closed(2.0)
    assert call.end_reason is EndReason.ERROR
    other = _call()
    other.hangup(EndReason.REJECTED, 1.0)
    other.closed(2.0, EndReason.CALLER_HANGUP)
    assert other.end_reason is EndReason.REJECTED
    assert other.duration is None


@pytest.mark.parametrize("state", list(CallState))
@pytest.mark.parametrize("trigger", list(CallTrigger))
def test_table_is_the_only_authority(state: CallState, trigger: CallTrigger) -> None:
    call = _call()
    call.state = state
    if (state, trigger) in TRANSITIONS:
        assert call.can(trigger)
        {
            CallTrigger.ANSWER: lambda: call.answer(1.0),
            CallTrigger.HANGUP: lambda: call.hangup(EndReason.DRAIN, 1.0),
            CallTrigger.CLOSED: lambda: call.closed(1.0),
        }[trigger]()
        assert call.state is TRANSITIONS[(state, trigger)]
    else:
        assert not call.can(trigger)
        with pytest.raises(InvalidCallTransition) as info:
            if trigger is CallTrigger.ANSWER:
                call.answer(1.0)
            elif trigger is CallTrigger.HANGUP:
                call.hangup(EndReason.DRAIN, 1.0)
            else:
                call.closed(1.0)
        assert info.value.state is state and call.state is state


def test_event_log_bounded() -> None:
    call = _call()
    call.max_events = 3
    for i in range(10):
        call.record(float(i), "dtmf", str(i))
    assert len(call.events) == 3 and call.dropped_events == 8
