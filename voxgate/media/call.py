"""The ``Call``: one phone call's lifecycle as a state machine.

ringing -> connected -> ending -> ended, with shortcuts for calls that never
connect (rejected, caller gave up) and for abrupt ends (socket lost). Every
change is checked against ``TRANSITIONS``; anything else raises
``InvalidCallTransition``. Times are supplied by the caller (wall-clock
seconds, so records can show them), never read here.
"""

from __future__ import annotations

import enum

import msgspec

__all__ = [
    "TRANSITIONS",
    "Call",
    "CallEvent",
    "CallState",
    "CallTrigger",
    "EndReason",
    "InvalidCallTransition",
]


class CallState(enum.Enum):
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDING = "ending"
    ENDED = "ended"


class CallTrigger(enum.Enum):
    ANSWER = "answer"
    HANGUP = "hangup"  # start ending: play nothing more, tear the transport down
    CLOSED = "closed"  # the transport is gone


class EndReason(enum.Enum):
    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    TRANSFER = "transfer"
    ERROR = "error"
    WORKER_LOST = "worker_lost"
    DRAIN = "drain"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    BUSY = "busy"
    CANCELLED = "cancelled"
    NO_ANSWER = "no_answer"
    FAILED = "failed"


TRANSITIONS: dict[tuple[CallState, CallTrigger], CallState] = {
    (CallState.RINGING, CallTrigger.ANSWER): CallState.CONNECTED,
    (CallState.RINGING, CallTrigger.HANGUP): CallState.ENDING,
    (CallState.RINGING, CallTrigger.CLOSED): CallState.ENDED,
    (CallState.CONNECTED, CallTrigger.HANGUP): CallState.ENDING,
    (CallState.CONNECTED, CallTrigger.CLOSED): CallState.ENDED,
    (CallState.ENDING, CallTrigger.CLOSED): CallState.ENDED,
}


class InvalidCallTransition(Exception):
    """Our own misuse: a trigger the current state does not allow."""

    def __init__(self, call_id: str, state: CallState, trigger: CallTrigger) -> None:
        super().__init__(f"call {call_id}: {trigger.value} not allowed in state {state.value}")
        self.state = state
        self.trigger = trigger


class CallEvent(msgspec.Struct, frozen=True):
    """Something that happened on a call, for the call record."""

    at: float
    kind: str
    detail: str = ""


class Call:
    """One call: identity, state, timestamps and a bounded event log."""

    __slots__ = (
        "agent_id",
        "answered_at",
        "call_id",
        "created_at",
        "dropped_events",
        "end_reason",
        "ended_at",
        "ending_at",
        "events",
        "from_number",
        "max_events",
        "provider",
        "state",
        "tenant_id",
        "to_number",
    )

    def __init__(
        self,
        call_id: str,
        *,
        tenant_id: str,
        agent_id: str,
        provider: str,
        from_number: str,
        to_number: str,
        now: float,
        max_events: int = 500,
    ) -> None:
        self.call_id = call_id
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.provider = provider
        self.from_number = from_number
        self.to_number = to_number
        self.state = CallState.RINGING
        self.created_at = now
        self.answered_at: float | None = None
        self.ending_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason: EndReason | None = None
        self.max_events = max_events
        self.events: list[CallEvent] = []
        self.dropped_events = 0
        self.record(now, "ringing")

    def record(self, now: float, kind: str, detail: str = "") -> None:
        """Append to the event log (bounded: later events are counted, not kept)."""
        if len(self.events) >= self.max_events:
            self.dropped_events += 1
            return
        self.events.append(CallEvent(now, kind, detail))

    def _apply(self, trigger: CallTrigger) -> CallState:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise InvalidCallTransition(self.call_id, self.state, trigger)
        self.state = target
        return target

    def can(self, trigger: CallTrigger) -> bool:
        return (self.state, trigger) in TRANSITIONS

    def answer(self, now: float) -> None:
        """ringing -> connected."""
        self._apply(CallTrigger.ANSWER)
        self.answered_at = now
        self.record(now, "connected")

    def hangup(self, reason: EndReason, now: float) -> None:
        """Start ending the call for ``reason`` (the first reason given sticks)."""
        self._apply(CallTrigger.HANGUP)
        self.ending_at = now
        if self.end_reason is None:
            self.end_reason = reason
        self.record(now, "ending", reason.value)

    def closed(self, now: float, reason: EndReason | None = None) -> None:
        """The transport is gone: -> ended. ``reason`` applies if none was set."""
        self._apply(CallTrigger.CLOSED)
        self.ended_at = now
        if self.end_reason is None:
            self.end_reason = reason if reason is not None else EndReason.ERROR
        self.record(now, "ended", self.end_reason.value)

    @property
    def is_live(self) -> bool:
        return self.state in (CallState.RINGING, CallState.CONNECTED)

    @property
    def duration(self) -> float | None:
        """Seconds from answer to end (None if never answered or not ended)."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.answered_at

    def __repr__(self) -> str:
        return f"Call({self.call_id!r}, {self.state.value})"
