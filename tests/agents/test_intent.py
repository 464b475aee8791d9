"""Built-in intent classifier: accuracy on held-out phrases, determinism, speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from voxgate.agents.flowspec import Intent
from voxgate.agents.intent import IntentClassifier
from voxgate.agents.templates import get_template

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "data"

# Phrases that are NOT in the template's examples (apart from the fixture phrases
# the template must handle); None = out of scope, must go to fallback.
HELD_OUT: dict[str | None, list[str]] = {
    "hours": [
        "When do you open on Monday?",
        "Are you open this Sunday?",
        "What time do you shut?",
        "Are you open right now?",
        "How long are you open on Fridays?",
        "What are the opening times?",
        "Is the shop open on Saturday morning?",
        "When are you closing today?",
        "What hours do you work?",
    ],
    "booking": [
        "I'd like to make an appointment please.",
        "Can I book in for next Tuesday?",
        "I want to schedule a visit for Friday.",
        "Do you have an opening on Monday at three?",
        "I need to book a time to come in.",
        "Could I get an appointment this week?",
        "Please book me for the 5th.",
        "I'd like to reserve a slot tomorrow afternoon.",
        "Can I come in on Thursday at noon?",
    ],
    "human": [
        "Can I talk to someone real?",
        "Put me through to a human.",
        "I want an operator.",
        "Let me talk to a real human being.",
        "Connect me with a representative please.",
        "I'd like to speak to a staff member.",
        "Transfer me to someone.",
        "Can I speak to a person please?",
        "Get me someone to talk to.",
    ],
    "goodbye": [
        "Okay, thank you, bye.",
        "That's all I needed, thanks.",
        "Bye now.",
        "No, that's it, goodbye.",
        "Thanks for your help, bye.",
        "I'm all done, thank you.",
        "See you later.",
        "Nothing more, thanks.",
        "Alright, bye bye.",
    ],
    None: [
        "What's the weather like?",
        "Do you sell gift cards?",
        "How much does it cost?",
        "Cancel my subscription.",
        "Where is my package?",
        "My order number is four five seven two.",
    ],
}


def demo_classifier() -> IntentClassifier:
    flow = get_template("demo-receptionist").flow
    assert flow is not None
    return IntentClassifier.from_intents(flow.intents)


def accuracy(clf: IntentClassifier, data: dict[str | None, list[str]]) -> float:
    total = correct = 0
    for label, texts in data.items():
        for text in texts:
            total += 1
            correct += clf.classify(text).intent == label
    return correct / total


def test_held_out_accuracy() -> None:
    acc = accuracy(demo_classifier(), HELD_OUT)
    print(
        f"held-out accuracy (demo-receptionist, {sum(map(len, HELD_OUT.values()))} phrases): "
        f"{acc:.3f}"
    )
    assert acc >= 0.85


def test_leave_one_out_accuracy_on_template_examples() -> None:
    flow = get_template("demo-receptionist").flow
    assert flow is not None
    pairs = [(i.name, e) for i in flow.intents for e in i.examples]
    correct = 0
    for k, (label, text) in enumerate(pairs):
        clf = IntentClassifier(p for j, p in enumerate(pairs) if j != k)
        correct += clf.classify(text).intent == label
    acc = correct / len(pairs)
    print(f"leave-one-out accuracy on {len(pairs)} template examples: {acc:.3f}")
    assert acc >= 0.75


def test_fixture_phrases_route_as_the_demo_expects() -> None:
    manifest = json.loads((TESTDATA / "audio" / "manifest.json").read_text())
    transcripts = {e["name"]: e["tinyen_transcript"] for e in manifest if e["kind"] == "phrase"}
    clf = demo_classifier()
    expected = {
        "book_appointment": "booking",
        "opening_hours_saturday": "hours",
        "speak_to_person": "human",
        "goodbye": "goodbye",
        "cancel_subscription": None,
        "where_is_my_package": None,
    }
    for name, intent in expected.items():
        assert clf.classify(transcripts[name]).intent == intent, name


def test_deterministic_and_order_independent() -> None:
    intents = [
        Intent(name="a", examples=["open the door", "door open please"]),
        Intent(name="b", examples=["close the window", "shut the window"]),
    ]
    one = IntentClassifier.from_intents(intents)
    two = IntentClassifier.from_intents(list(reversed(intents)))
    for text in ["please open door", "shut it", "window close", "xyz"]:
        assert one.classify(text) == two.classify(text)
    assert one.classify("please open the door").intent == "a"
    assert one.classify("could you close the window").intent == "b"
    assert one.classify("").intent is None
    assert one.classify("!!!").confidence == 0.0


def test_threshold_and_empty_classifier() -> None:
    clf = IntentClassifier([("a", "hello there")], threshold=0.99)
    assert clf.classify("hello").intent is None
    assert clf.classify("hello", threshold=0.1).intent == "a"
    empty = IntentClassifier([])
    prediction = empty.classify("anything")
    assert prediction.intent is None and prediction.ranking == ()


def test_fast_enough() -> None:
    clf = demo_classifier()
    text = "Hi, I'd like to book an appointment for tomorrow morning."
    clf.classify(text)
    n = 300
    began = time.perf_counter()
    for _ in range(n):
        clf.classify(text)
    per_call = (time.perf_counter() - began) / n
    assert per_call < 0.001, per_call
