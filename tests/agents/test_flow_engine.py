"""Sans-IO flow engine, driven with a fake clock (plain floats): no sleeps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.agents.flow_engine import (
    MAX_STEPS_PER_TURN,
    Action,
    CallLlm,
    CallWebhook,
    ExternalResult,
    FlowEngine,
    FlowEngineError,
    Hangup,
    IntentMatched,
    Listen,
    QueryKnowledge,
    Say,
    SlotFilled,
    State,
    Transfer,
)
from voxgate.agents.flowspec import DEFAULT_NO_INPUT_TEXT, DEFAULT_NO_MATCH_TEXT, parse_flow
from voxgate.agents.intent import IntentClassifier
from voxgate.agents.templates import get_template

TUESDAY = dt.date(2025, 3, 4)


def flow_of(nodes: list[dict[str, Any]], edges: list[tuple[str, str, str]], **extra: Any) -> Any:
    doc: dict[str, Any] = {
        "schema": "flowspec/1",
        "id": "t",
        "nodes": [{"id": "start", "type": "start"}, *nodes],
        "edges": [
            {"id": f"e{i}", "source": s, "port": p, "target": t}
            for i, (s, p, t) in enumerate(edges)
        ],
    }
    doc.update(extra)
    flow, _ = parse_flow(doc)
    return flow


def says(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Say)]


_DEMO = get_template("demo-receptionist").flow
assert _DEMO is not None
_DEMO_CLASSIFIER = IntentClassifier.from_intents(_DEMO.intents)


def demo() -> FlowEngine:
    assert _DEMO is not None
    return FlowEngine(_DEMO, classifier=_DEMO_CLASSIFIER, today=TUESDAY)


# --- the demo template end to end -------------------------------------------------


def test_demo_conversation_fixture() -> None:
    engine = demo()
    actions = engine.start(0.0)
    assert isinstance(actions[0], Say) and actions[0].static
    assert "How can I help?" in actions[0].text
    assert actions[-1] == Listen("main", None, "intent")
    assert engine.listening and engine.next_timeout() is None  # greeting still playing
    engine.on_prompt_played(4.0)
    assert engine.next_timeout() == 10.0

    actions = engine.on_utterance("Hi, I'd like to book an appointment for tomorrow morning.", 5.0)
    assert IntentMatched("booking", actions[0].confidence, "main") == actions[0]  # type: ignore[union-attr]
    assert SlotFilled("date", "2025-03-05", "main") in actions
    assert SlotFilled("time", "09:00", "main") in actions
    # both slots came with the request: straight to the confirmation
    confirm = says(actions)
    assert confirm == ["So that's Wednesday, March 5th at 9 AM. Shall I book that for you?"]
    assert actions[-1] == Listen("ask_confirm", "confirm", "yes_no")
    assert not next(a for a in actions if isinstance(a, Say)).static
    assert engine.next_timeout() is None

    again = engine.on_utterance("Can you repeat that please?", 6.0)
    assert says(again) == confirm

    actions = engine.on_utterance("Yes, that works for me.", 7.0)
    assert SlotFilled("confirm", True, "ask_confirm") in actions
    assert "you're booked for Wednesday, March 5th at 9 AM" in says(actions)[0]

    actions = engine.on_utterance("Goodbye.", 8.0)
    assert says(actions) == ["Thanks for calling. Goodbye!"]
    assert actions[-1] == Hangup("flow_hangup", "goodbye")
    assert engine.finished and engine.next_timeout() is None
    assert engine.on_utterance("hello?", 9.0) == []
    assert engine.slots == {"date": "2025-03-05", "time": "09:00", "confirm": True}


def test_demo_booking_step_by_step_and_decline() -> None:
    engine = demo()
    engine.start(0.0)
    actions = engine.on_utterance("I need to make a booking.", 1.0)
    assert actions[-1] == Listen("ask_date", "date", "date")
    actions = engine.on_utterance("next monday", 2.0)
    assert SlotFilled("date", "2025-03-10", "ask_date") in actions
    assert actions[-1] == Listen("ask_time", "time", "time")
    actions = engine.on_utterance("half past two", 3.0)
    assert says(actions) == ["So that's Monday, March 10th at 2:30 PM. Shall I book that for you?"]
    actions = engine.on_utterance("no, that doesn't work", 4.0)
    assert says(actions) == [
        "No problem, let's find another time.",
        "Sure. What day would you like to come in?",
    ]
    assert engine.slots["date"] is None


def test_demo_hours_transfer_and_global_route() -> None:
    engine = demo()
    engine.start(0.0)
    actions = engine.on_utterance("What are your opening hours on Saturday?", 1.0)
    assert "Saturday from ten to two" in says(actions)[0]
    assert actions[-1] == Listen("main", None, "intent")
    # a global route leaves the booking form at once
    engine.on_utterance("I'd like to book an appointment", 2.0)
    actions = engine.on_utterance("No, I want to speak to a person.", 3.0)
    assert IntentMatched("human", actions[0].confidence, "ask_date") == actions[0]  # type: ignore[union-attr]
    assert actions[-1] == Transfer("operator", "to_person")
    assert engine.finished


def test_demo_dtmf_menu_and_yes_no() -> None:
    engine = demo()
    engine.start(0.0)
    actions = engine.on_dtmf("2", 1.0)
    assert IntentMatched("booking", 1.0, "main") in actions
    engine.on_utterance("tomorrow", 2.0)
    engine.on_utterance("ten am", 3.0)
    actions = engine.on_dtmf("1", 4.0)
    assert SlotFilled("confirm", True, "ask_confirm") in actions
    assert engine.on_dtmf("x", 5.0) == []


# --- listening: re-prompts, no-input timers, retries ------------------------------


ASK_FLOW: tuple[list[dict[str, Any]], list[tuple[str, str, str]]] = (
    [
        {
            "id": "ask",
            "type": "ask",
            "slot": "n",
            "kind": "number",
            "text": "Pick a number.",
            "max_retries": 1,
        },
        {"id": "ok", "type": "hangup", "text": "Thanks."},
        {"id": "nomatch", "type": "hangup", "text": "No match."},
        {"id": "noinput", "type": "hangup", "text": "No input."},
    ],
    [
        ("start", "next", "ask"),
        ("ask", "filled", "ok"),
        ("ask", "no_match", "nomatch"),
        ("ask", "no_input", "noinput"),
    ],
)


def test_no_input_reprompts_then_follows_port() -> None:
    engine = FlowEngine(flow_of(*ASK_FLOW), no_input_timeout=5.0)
    engine.start(0.0)
    assert engine.next_timeout() is None
    assert engine.on_timer(100.0) == []  # no timer armed yet: nothing happens
    engine.on_prompt_played(2.0)
    assert engine.next_timeout() == 7.0
    assert engine.on_timer(6.9) == []
    actions = engine.on_timer(7.0)
    assert says(actions) == [DEFAULT_NO_INPUT_TEXT, "Pick a number."]
    assert engine.next_timeout() is None  # waits for the re-prompt to play
    engine.on_prompt_played(10.0)
    assert engine.next_timeout() == 15.0
    actions = engine.on_timer(15.0)
    assert says(actions) == ["No input."]
    assert actions[-1] == Hangup("flow_hangup", "noinput")


def test_no_match_reprompts_then_follows_port() -> None:
    engine = FlowEngine(flow_of(*ASK_FLOW))
    engine.start(0.0)
    actions = engine.on_utterance("banana", 1.0)
    assert says(actions) == [DEFAULT_NO_MATCH_TEXT, "Pick a number."]
    actions = engine.on_utterance("still banana", 2.0)
    assert says(actions) == ["No match."]


def test_answer_fills_and_speech_cancels_timer() -> None:
    engine = FlowEngine(flow_of(*ASK_FLOW))
    engine.start(0.0)
    engine.on_prompt_played(1.0)
    assert engine.next_timeout() is not None
    actions = engine.on_utterance("forty two", 2.0)
    assert SlotFilled("n", 42, "ask") in actions
    assert engine.finished


def test_listen_without_prompt_arms_timer_at_once() -> None:
    flow = flow_of(
        [{"id": "i", "type": "intent"}],
        [("start", "next", "i")],
        intents=[{"name": "x", "examples": ["xylophone"]}],
    )
    engine = FlowEngine(flow, no_input_timeout=4.0, max_retries=0)
    actions = engine.start(10.0)
    assert actions == [Listen("i", None, "intent")]
    assert engine.next_timeout() == 14.0
    actions = engine.on_timer(14.0)
    assert actions == [Hangup("no_input", "i")]


def test_intent_without_fallback_edge_reprompts() -> None:
    flow = flow_of(
        [
            {"id": "i", "type": "intent", "text": "Say xylophone.", "reprompt": "Try again."},
            {"id": "x", "type": "hangup"},
        ],
        [("start", "next", "i"), ("i", "x", "x")],
        intents=[{"name": "x", "examples": ["xylophone"]}],
    )
    engine = FlowEngine(flow, max_retries=1)
    engine.start(0.0)
    assert says(engine.on_utterance("something else entirely", 1.0)) == ["Try again."]
    assert engine.on_utterance("something else entirely", 2.0) == [Hangup("no_match", "i")]


def test_dtmf_digits_with_terminator_and_inter_digit_timeout() -> None:
    flow = flow_of(
        [
            {"id": "pin", "type": "ask", "slot": "pin", "kind": "digits", "text": "Your PIN?"},
            {"id": "done", "type": "say", "text": "Got {pin}."},
        ],
        [("start", "next", "pin"), ("pin", "filled", "done")],
    )
    engine = FlowEngine(flow)
    engine.start(0.0)
    engine.on_prompt_played(1.0)
    for d in "123":
        assert engine.on_dtmf(d, 2.0) == []
    assert engine.next_timeout() == 5.0  # inter-digit timer replaced the no-input timer
    actions = engine.on_dtmf("4", 2.5)
    actions = engine.on_dtmf("#", 2.6)
    assert SlotFilled("pin", "1234", "pin") in actions
    assert says(actions) == ["Got 1 2 3 4."]

    engine = FlowEngine(flow)
    engine.start(0.0)
    engine.on_dtmf("9", 1.0)
    engine.on_dtmf("8", 2.0)
    actions = engine.on_timer(5.0)
    assert SlotFilled("pin", "98", "pin") in actions


def test_max_digits_completes_entry() -> None:
    flow = flow_of(
        [
            {
                "id": "a",
                "type": "ask",
                "slot": "code",
                "kind": "digits",
                "text": "Code?",
                "max_digits": 2,
            }
        ],
        [("start", "next", "a")],
    )
    engine = FlowEngine(flow)
    engine.start(0.0)
    engine.on_dtmf("4", 1.0)
    actions = engine.on_dtmf("2", 1.1)
    assert SlotFilled("code", "42", "a") in actions
    assert actions[-1] == Hangup("end_of_flow", "a")


# --- logic nodes ---------------------------------------------------------------------


def test_condition_and_set() -> None:
    flow = flow_of(
        [
            {"id": "init", "type": "set", "assignments": [{"slot": "count", "expr": "0"}]},
            {"id": "inc", "type": "set", "assignments": [{"slot": "count", "expr": "count + 1"}]},
            {"id": "check", "type": "condition", "rules": [{"port": "done", "when": "count >= 3"}]},
            {"id": "bye", "type": "hangup", "text": "Counted to {count}."},
        ],
        [
            ("start", "next", "init"),
            ("init", "next", "inc"),
            ("inc", "next", "check"),
            ("check", "else", "inc"),
            ("check", "done", "bye"),
        ],
    )
    engine = FlowEngine(flow)
    actions = engine.start(0.0)
    assert says(actions) == ["Counted to 3."]
    assert [a.value for a in actions if isinstance(a, SlotFilled)] == [0, 1, 2, 3]


def test_loop_without_input_is_cut_off() -> None:
    flow = flow_of(
        [{"id": "a", "type": "say", "text": "Again."}, {"id": "b", "type": "set"}],
        [("start", "next", "a"), ("a", "next", "b"), ("b", "next", "a")],
    )
    engine = FlowEngine(flow)
    actions = engine.start(0.0)
    assert actions[-1] == Hangup("loop_limit", actions[-1].node_id)
    assert len(says(actions)) <= MAX_STEPS_PER_TURN // 2 + 1
    assert engine.finished


def test_variables_in_texts_and_conditions() -> None:
    flow = flow_of(
        [
            {
                "id": "c",
                "type": "condition",
                "rules": [{"port": "vip", "when": "caller in ['+15550100', '+15550101']"}],
            },
            {"id": "vip", "type": "hangup", "text": "Hello {caller}."},
            {"id": "other", "type": "hangup"},
        ],
        [("start", "next", "c"), ("c", "vip", "vip"), ("c", "else", "other")],
    )
    actions = FlowEngine(flow, variables={"caller": "+15550100"}).start(0.0)
    assert says(actions) == ["Hello +15550100."]
    actions = FlowEngine(flow, variables={"caller": "+1999"}).start(0.0)
    assert actions == [Hangup("flow_hangup", "other")]


# --- external work -------------------------------------------------------------------


def test_knowledge_not_found_and_found() -> None:
    flow = flow_of(
        [
            {"id": "i", "type": "intent"},
            {"id": "k", "type": "knowledge", "result_slot": "answer"},
            {"id": "yes", "type": "hangup", "text": "Bye."},
            {"id": "no", "type": "hangup", "text": "I don't know that."},
        ],
        [
            ("start", "next", "i"),
            ("i", "fallback", "k"),
            ("k", "found", "yes"),
            ("k", "not_found", "no"),
        ],
    )
    engine = FlowEngine(flow)
    engine.start(0.0)
    actions = engine.on_utterance("Do you {sell} gift cards?", 1.0)
    query = actions[-1]
    assert isinstance(query, QueryKnowledge) and query.query == "Do you {sell} gift cards?"
    assert engine.state is State.WAITING
    assert engine.on_result("stale", ExternalResult(ok=True, text="x"), 2.0) == []
    actions = engine.on_result(
        query.request_id, ExternalResult(ok=False, data={"knowledge": "unavailable"}), 2.0
    )
    assert says(actions) == ["I don't know that."]

    engine = FlowEngine(flow)
    engine.start(0.0)
    query = engine.on_utterance("gift cards?", 1.0)[-1]
    assert isinstance(query, QueryKnowledge)
    # answers are spoken verbatim: braces from a document are not placeholders
    actions = engine.on_result(query.request_id, ExternalResult(ok=True, text="Yes {x}."), 2.0)
    assert actions[0] == SlotFilled("answer", "Yes {x}.", "k")
    assert actions[1] == Say("Yes {x}.", False, True, "k")


def test_llm_node_messages_result_and_timeout() -> None:
    flow = flow_of(
        [
            {"id": "i", "type": "intent", "text": "Ask me anything."},
            {
                "id": "l",
                "type": "llm",
                "system": "Be brief. Caller {caller}.",
                "max_tokens": 50,
                "result_slot": "reply",
                "timeout": 10,
            },
            {"id": "err", "type": "hangup", "text": "Sorry."},
        ],
        [("start", "next", "i"), ("i", "fallback", "l"), ("l", "next", "i"), ("l", "error", "err")],
    )
    engine = FlowEngine(flow, variables={"caller": "Ann"})
    engine.start(0.0)
    call = engine.on_utterance("What is two plus two?", 1.0)[-1]
    assert isinstance(call, CallLlm)
    assert call.messages == [
        {"role": "system", "content": "Be brief. Caller Ann."},
        {"role": "assistant", "content": "Ask me anything."},
        {"role": "user", "content": "What is two plus two?"},
    ]
    assert call.options == {"timeout": 10.0, "max_tokens": 50}
    actions = engine.on_result(call.request_id, ExternalResult(ok=True, text="Four."), 3.0)
    assert SlotFilled("reply", "Four.", "l") in actions
    assert actions[-1] == Listen("i", None, "intent")
    assert says(actions) == ["Ask me anything."]
    # the reply was spoken by the owner: the timer waits for playback
    assert engine.next_timeout() is None

    call = engine.on_utterance("And three plus three?", 4.0)[-1]
    assert isinstance(call, CallLlm)
    assert {"role": "assistant", "content": "Four. Ask me anything."} in call.messages
    assert engine.next_timeout() == 4.0 + 10.0 + 2.0
    actions = engine.on_timer(16.0)
    assert says(actions) == ["Sorry."]


def test_webhook_success_updates_slots_and_error_port() -> None:
    flow = flow_of(
        [
            {"id": "w", "type": "webhook", "url": "https://hooks.test/x", "timeout": 3},
            {"id": "ok", "type": "hangup", "text": "Status {status}."},
            {"id": "bad", "type": "hangup", "text": "Failed."},
        ],
        [("start", "next", "w"), ("w", "success", "ok"), ("w", "error", "bad")],
    )
    engine = FlowEngine(flow, variables={"caller": "+1"})
    call = engine.start(0.0)[-1]
    assert isinstance(call, CallWebhook)
    assert call.url == "https://hooks.test/x" and call.timeout == 3.0
    assert call.body["variables"] == {"caller": "+1"} and call.body["node_id"] == "w"
    actions = engine.on_result(
        call.request_id,
        ExternalResult(ok=True, data={"slots": {"status": "shipped", "bad": [1]}, "say": "Hi."}),
        1.0,
    )
    assert SlotFilled("status", "shipped", "w") in actions
    assert not any(isinstance(a, SlotFilled) and a.slot == "bad" for a in actions)
    assert says(actions) == ["Hi.", "Status shipped."]

    engine = FlowEngine(flow)
    call = engine.start(0.0)[-1]
    assert isinstance(call, CallWebhook)
    actions = engine.on_result(call.request_id, ExternalResult(ok=False, error="timeout"), 1.0)
    assert says(actions) == ["Failed."]


def test_subflow_runs_and_returns() -> None:
    sub, _ = parse_flow(
        {
            "schema": "flowspec/1",
            "id": "greeting",
            "nodes": [{"id": "s", "type": "start"}, {"id": "hi", "type": "say", "text": "Sub."}],
            "edges": [{"id": "e", "source": "s", "port": "next", "target": "hi"}],
        }
    )
    flow = flow_of(
        [
            {"id": "call", "type": "subflow", "flow": "greeting"},
            {"id": "after", "type": "hangup", "text": "Back."},
            {"id": "err", "type": "hangup", "text": "Missing."},
        ],
        [("start", "next", "call"), ("call", "next", "after"), ("call", "error", "err")],
    )
    assert says(FlowEngine(flow, subflows={"greeting": sub}).start(0.0)) == ["Sub.", "Back."]
    assert says(FlowEngine(flow).start(0.0)) == ["Missing."]


def test_misuse_and_ignored_events() -> None:
    engine = FlowEngine(flow_of(*ASK_FLOW))
    assert engine.on_utterance("hi", 0.0) == []  # not started
    engine.start(0.0)
    with pytest.raises(FlowEngineError):
        engine.start(1.0)
    assert engine.on_utterance("   ", 1.0) == []
    assert engine.on_result("nope", ExternalResult(ok=True), 1.0) == []


def test_vocabulary_hints() -> None:
    hints = demo().vocabulary_hints()
    assert "appointment" in hints and "Saturday" in hints and "the" not in hints


def test_actions_encode_as_tagged_json() -> None:
    import msgspec

    actions = demo().start(0.0)
    decoded = msgspec.json.decode(msgspec.json.encode(actions), type=list[Action])
    assert decoded == actions


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("u"),
                st.sampled_from(
                    [
                        "yes",
                        "no",
                        "tomorrow",
                        "ten am",
                        "goodbye",
                        "book",
                        "repeat that",
                        "?",
                        "",
                        "speak to a person",
                        "opening hours",
                    ]
                ),
            ),
            st.tuples(st.just("d"), st.sampled_from(list("0123456789*#x"))),
            st.tuples(st.just("p"), st.just("")),
            st.tuples(st.just("t"), st.just("")),
        ),
        max_size=30,
    )
)
def test_random_event_sequences_never_break(events: list[tuple[str, str]]) -> None:
    engine = demo()
    now = 0.0
    engine.start(now)
    for kind, value in events:
        now += 1.0
        if kind == "u":
            engine.on_utterance(value, now)
        elif kind == "d":
            engine.on_dtmf(value, now)
        elif kind == "p":
            engine.on_prompt_played(now)
        else:
            deadline = engine.next_timeout()
            if deadline is not None:
                now = max(now, deadline)
                engine.on_timer(now)
        if engine.finished:
            assert engine.next_timeout() is None
            break
        assert engine.listening


def test_failed_transfer_follows_the_failed_port() -> None:
    flow = flow_of(
        [
            {"id": "tr", "type": "transfer", "target": "operator", "text": "Connecting."},
            {"id": "sorry", "type": "say", "text": "Nobody is free. Anything else?"},
            {"id": "i", "type": "intent"},
            {"id": "bye", "type": "hangup", "text": "Goodbye."},
        ],
        [
            ("start", "next", "tr"),
            ("tr", "failed", "sorry"),
            ("sorry", "next", "i"),
            ("i", "no", "bye"),
            ("i", "fallback", "bye"),
        ],
        intents=[{"name": "no", "examples": ["no thanks", "nothing else"]}],
    )
    engine = FlowEngine(flow)
    actions = engine.start(0.0)
    assert says(actions) == ["Connecting."]
    assert actions[-1] == Transfer("operator", "tr")
    assert engine.finished
    actions = engine.on_transfer_failed(3.0)
    assert says(actions) == ["Nobody is free. Anything else?"]
    assert isinstance(actions[-1], Listen) and engine.listening
    assert engine.on_transfer_failed(4.0) == []  # one failure per transfer
    engine.on_prompt_played(5.0)
    assert says(engine.on_utterance("no thanks", 6.0)) == ["Goodbye."]
    assert engine.finished


def test_failed_transfer_without_a_failed_edge_leaves_the_ending_to_the_owner() -> None:
    flow = flow_of(
        [{"id": "tr", "type": "transfer", "target": "+15550100"}],
        [("start", "next", "tr")],
    )
    engine = FlowEngine(flow)
    assert engine.start(0.0) == [Transfer("+15550100", "tr")]
    assert engine.on_transfer_failed(1.0) == []
    assert engine.finished


def test_repeat_after_an_answer_replays_the_answer() -> None:
    engine = demo()
    engine.start(0.0)
    answer = says(engine.on_utterance("What are your opening hours on Saturday?", 1.0))
    assert answer  # the hours answer, then the main menu listens again
    assert says(engine.on_utterance("Can you repeat that?", 2.0)) == answer
    assert engine.listening
    # Asked twice in a row, the same words again.
    assert says(engine.on_utterance("Sorry, say that again?", 3.0)) == answer


def test_repeat_before_anything_was_answered_replays_the_greeting() -> None:
    engine = demo()
    greeting = says(engine.start(0.0))
    assert says(engine.on_utterance("Pardon?", 1.0)) == greeting


def test_no_input_timer_waits_while_the_caller_speaks() -> None:
    engine = demo()
    engine.start(0.0)
    engine.on_prompt_played(1.0)
    assert engine.next_timeout() == 7.0
    engine.on_caller_speaking(2.0)
    assert engine.next_timeout() is None  # recognition may take a while: no "are you there?"
    assert engine.on_timer(8.0) == []
    engine.on_caller_silent(9.0)  # the sound was not words
    assert engine.next_timeout() == 15.0
    engine.on_caller_speaking(10.0)
    engine.on_prompt_played(10.5)  # a prompt ending mid-speech does not re-arm it
    assert engine.next_timeout() is None
    actions = engine.on_utterance("What are your opening hours on Saturday?", 11.0)
    assert says(actions)
    engine.on_prompt_played(12.0)
    assert engine.next_timeout() == 18.0
