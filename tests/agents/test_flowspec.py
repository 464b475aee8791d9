"""flowspec/1 validation: shapes, semantic checks, paths in errors, and robustness."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxgate.agents.flowspec import (
    DEFAULT_NO_INPUT_TEXT,
    DEFAULT_NO_MATCH_TEXT,
    NODE_TYPES,
    AskNode,
    FlowValidationError,
    SayNode,
    flow_to_dict,
    node_ports,
    parse_flow,
    static_prompts,
)

# The flowspec/1 example of the design document, kept as a fixture.
DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
DESIGN_EXAMPLE = DATA / "flowspec_design_example.json"


def design_example() -> dict[str, Any]:
    doc = json.loads(DESIGN_EXAMPLE.read_text())
    assert isinstance(doc, dict)
    return doc


def minimal(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "flowspec/1",
        "id": "t",
        "nodes": [{"id": "start", "type": "start"}, {"id": "hi", "type": "say", "text": "Hi."}],
        "edges": [{"id": "e1", "source": "start", "port": "next", "target": "hi"}],
    }
    doc.update(extra)
    return doc


def error_of(doc: object) -> FlowValidationError:
    with pytest.raises(FlowValidationError) as info:
        parse_flow(doc)
    return info.value


def test_design_example_parses_and_round_trips() -> None:
    doc = design_example()
    flow, warnings = parse_flow(doc)
    assert warnings == []
    assert flow.id == "front-desk"
    assert isinstance(flow.nodes[1], SayNode)
    assert flow.nodes[1].text.startswith("Hi, this is the front desk")
    out = flow_to_dict(flow)
    assert out == doc
    again, _ = parse_flow(out)
    assert again == flow


def test_accepts_json_text() -> None:
    flow, _ = parse_flow(json.dumps(minimal()))
    assert flow.id == "t"
    assert error_of(b"{nope").path == "$"


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d.update(schema="flowspec/2"), "$.schema", "flowspec/1"),
        (lambda d: d["nodes"][1].update(type="dance"), "$.nodes[1].type", "Invalid value"),
        (lambda d: d["nodes"][1].update(text=3), "$.nodes[1].text", "Expected `str`"),
        (lambda d: d["nodes"][1].pop("text"), "$.nodes[1].text", "missing required field"),
        (lambda d: d["nodes"][1].update(id="start"), "$.nodes[1].id", "duplicate node id"),
        (lambda d: d["nodes"].pop(1), "$.edges[0].target", "no node 'hi'"),
        (lambda d: d["edges"][0].update(target="ghost"), "$.edges[0].target", "no node"),
        (lambda d: d["edges"][0].update(port="filled"), "$.edges[0].port", "allowed: next"),
        (lambda d: d["nodes"][1].update(text="x" * 2001), "$.nodes[1].text", "length"),
        (lambda d: d.update(nodes=[d["nodes"][1]], edges=[]), "$.nodes", "no start node"),
        (
            lambda d: d["nodes"].append({"id": "s2", "type": "start"}),
            "$.nodes[2].type",
            "exactly one start",
        ),
        (
            lambda d: d["edges"].append(
                {"id": "e1", "source": "hi", "port": "next", "target": "hi"}
            ),
            "$.edges[1].id",
            "duplicate edge id",
        ),
        (
            lambda d: d["edges"].append(
                {"id": "e2", "source": "start", "port": "next", "target": "hi"}
            ),
            "$.edges[1].port",
            "already has an edge",
        ),
        (
            lambda d: d["edges"].append(
                {"id": "e2", "source": "hi", "port": "next", "target": "start"}
            ),
            "$.edges[1].target",
            "start node cannot be a target",
        ),
        (lambda d: d.update(nodes="x"), "$.nodes", "Expected `array`"),
    ],
)
def test_errors_name_the_path(mutate: Any, path: str, fragment: str) -> None:
    doc = minimal()
    mutate(doc)
    err = error_of(doc)
    assert err.path == path, err
    assert fragment in err.message


def test_ports_by_node_type() -> None:
    doc = design_example()
    doc["nodes"] += [
        {"id": "a", "type": "ask", "slot": "when", "kind": "date", "text": "When?"},
        {"id": "c", "type": "condition", "rules": [{"port": "early", "when": "hour < 9"}]},
        {"id": "k", "type": "knowledge"},
        {"id": "w", "type": "webhook", "url": "https://example.test/hook"},
        {"id": "l", "type": "llm"},
        {"id": "x", "type": "set", "assignments": [{"slot": "n", "expr": "n + 1"}]},
        {"id": "t", "type": "transfer", "target": "+15550100"},
        {"id": "h", "type": "hangup"},
        {"id": "sub", "type": "subflow", "flow": "other"},
    ]
    flow, warnings = parse_flow(doc)
    by_id = {n.id: n for n in flow.nodes}
    assert node_ports(by_id["ask"], flow) == ("hours", "booking", "fallback")
    assert node_ports(by_id["a"], flow) == ("filled", "no_match", "no_input")
    assert node_ports(by_id["c"], flow) == ("early", "else")
    assert node_ports(by_id["k"], flow) == ("found", "not_found")
    assert node_ports(by_id["w"], flow) == ("success", "error")
    assert node_ports(by_id["x"], flow) == ("next",)
    assert node_ports(by_id["t"], flow) == ("failed",)
    assert node_ports(by_id["h"], flow) == ()
    # the added nodes have no incoming edges: each is reported, none is an error
    unreachable = {w.path for w in warnings if "unreachable" in w.message}
    assert unreachable == {f"$.nodes[{i}]" for i in range(6, 15)}
    assert {type(n).__struct_config__.tag for n in flow.nodes} <= set(NODE_TYPES)

    # a port that belongs to another node type is rejected
    doc["edges"].append({"id": "bad", "source": "k", "port": "success", "target": "h"})
    err = error_of(doc)
    assert err.path == f"$.edges[{len(doc['edges']) - 1}].port"
    assert "found, not_found" in err.message


def test_semantic_errors() -> None:
    base = design_example()

    doc = copy.deepcopy(base)
    doc["intents"].append({"name": "hours", "examples": ["x"]})
    assert error_of(doc).path == "$.intents[2].name"

    doc = copy.deepcopy(base)
    doc["intents"].append({"name": "fallback", "examples": ["x"]})
    assert "reserved" in error_of(doc).message

    doc = copy.deepcopy(base)
    doc["nodes"].append({"id": "c", "type": "condition", "rules": [{"port": "p", "when": "a =="}]})
    err = error_of(doc)
    assert err.path == "$.nodes[6].rules[0].when"
    assert "invalid expression" in err.message

    doc = copy.deepcopy(base)
    doc["nodes"].append({"id": "s", "type": "set", "assignments": [{"slot": "x", "expr": "1 +"}]})
    assert error_of(doc).path == "$.nodes[6].assignments[0].expr"

    doc = copy.deepcopy(base)
    doc["slots"] = [{"name": "d", "kind": "date"}]
    doc["nodes"].append({"id": "a", "type": "ask", "slot": "d", "kind": "time", "text": "?"})
    assert error_of(doc).path == "$.nodes[6].kind"

    doc = copy.deepcopy(base)
    doc["nodes"].append({"id": "w", "type": "webhook", "url": "ftp://x"})
    assert error_of(doc).path == "$.nodes[6].url"

    doc = copy.deepcopy(base)
    doc["globals"] = [{"intent": "nope", "target": "hours"}]
    assert error_of(doc).path == "$.globals[0].intent"

    doc = copy.deepcopy(base)
    doc["nodes"][2]["dtmf"] = {"1": "nope"}
    assert "unknown intent" in error_of(doc).message

    doc = copy.deepcopy(base)
    doc["nodes"][2]["dtmf"] = {"12": "hours"}
    assert error_of(doc).path.startswith("$.nodes[2].dtmf")


def test_warnings() -> None:
    doc = design_example()
    doc["intents"].append({"name": "empty"})
    doc["nodes"].append({"id": "w", "type": "webhook", "url": "http://plain.test/"})
    _, warnings = parse_flow(doc)
    paths = {w.path for w in warnings}
    assert "$.intents[2].examples" in paths
    assert "$.nodes[6].url" in paths
    assert "$.nodes[6]" in paths  # unreachable


def test_globals_make_targets_reachable() -> None:
    doc = design_example()
    doc["nodes"].append({"id": "bye", "type": "hangup", "text": "Bye."})
    _, warnings = parse_flow(doc)
    assert any(w.path == "$.nodes[6]" for w in warnings)
    doc["globals"] = [{"intent": "hours", "target": "bye"}]
    _, warnings = parse_flow(doc)
    assert warnings == []


def test_static_prompts_lists_constant_texts_only() -> None:
    doc = minimal()
    doc["nodes"] += [
        {"id": "dyn", "type": "say", "text": "You picked {day}."},
        {"id": "a", "type": "ask", "slot": "day", "kind": "date", "text": "Which day?"},
        {
            "id": "a2",
            "type": "ask",
            "slot": "n",
            "kind": "number",
            "text": "Which?",
            "reprompt": "Say a number.",
            "no_input_text": "Hello?",
        },
        {"id": "bye", "type": "hangup", "text": "Goodbye."},
        {"id": "tr", "type": "transfer", "target": "op", "text": "Connecting."},
        {"id": "i", "type": "intent", "text": "Anything else?"},
    ]
    flow, _ = parse_flow(doc)
    prompts = static_prompts(flow)
    assert prompts == [
        "Hi.",
        "Which day?",
        DEFAULT_NO_MATCH_TEXT,
        DEFAULT_NO_INPUT_TEXT,
        "Which?",
        "Say a number.",
        "Hello?",
        "Goodbye.",
        "Connecting.",
        "Anything else?",
    ]
    assert all("{" not in p for p in prompts)
    assert isinstance(flow.node("a"), AskNode)


# --- robustness: nothing but FlowValidationError, whatever the input -------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_json_only_raises_validation_errors(doc: object) -> None:
    try:
        parse_flow(doc)
    except FlowValidationError as exc:
        assert exc.path.startswith("$")


node_like = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["start", "a", "b", "c", ""]),
        "type": st.sampled_from([*NODE_TYPES, "x"]),
    },
    optional={
        "text": st.text(max_size=5) | st.integers(),
        "slot": st.sampled_from(["s", "1bad", ""]),
        "kind": st.sampled_from(["date", "time", "nope"]),
        "rules": st.lists(
            st.fixed_dictionaries({"port": st.text(max_size=3), "when": st.text(max_size=12)}),
            max_size=3,
        ),
        "assignments": st.lists(
            st.fixed_dictionaries({"slot": st.just("s"), "expr": st.text(max_size=12)}), max_size=2
        ),
        "url": st.sampled_from(["https://x.test", "nope"]),
        "target": st.sampled_from(["a", "+1555"]),
        "flow": st.just("f"),
        "dtmf": st.dictionaries(st.sampled_from(["1", "x"]), st.sampled_from(["i", "j"])),
    },
)
edge_like = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["e1", "e2", "e3"]),
        "source": st.sampled_from(["start", "a", "b", "c", "z"]),
        "port": st.sampled_from(["next", "filled", "i", "else", "found", "success", "bogus"]),
        "target": st.sampled_from(["start", "a", "b", "c", "z"]),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(node_like, max_size=5),
    st.lists(edge_like, max_size=5),
    st.lists(st.fixed_dictionaries({"name": st.sampled_from(["i", "j", "fallback"])}), max_size=2),
)
def test_near_valid_documents(nodes: list[Any], edges: list[Any], intents: list[Any]) -> None:
    doc = {"schema": "flowspec/1", "id": "f", "nodes": nodes, "edges": edges, "intents": intents}
    try:
        flow, _ = parse_flow(doc)
    except FlowValidationError as exc:
        assert exc.path.startswith("$")
    else:
        # anything accepted survives a round trip unchanged
        assert parse_flow(flow_to_dict(flow))[0] == flow


def test_transfer_nodes_have_a_failed_port_only() -> None:
    base = {
        "schema": "flowspec/1",
        "id": "t",
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "tr", "type": "transfer", "target": "operator"},
            {"id": "bye", "type": "hangup"},
        ],
    }
    edges = [{"id": "e1", "source": "start", "port": "next", "target": "tr"}]
    failed = {"id": "e2", "source": "tr", "port": "failed", "target": "bye"}
    parse_flow({**base, "edges": [*edges, failed]})
    bad = {**base, "edges": [*edges, {**failed, "port": "next"}]}
    with pytest.raises(FlowValidationError) as info:
        parse_flow(bad)
    assert info.value.path == "$.edges[1].port"
