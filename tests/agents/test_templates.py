"""Built-in templates load, validate, and have the documented shape."""

from __future__ import annotations

import pytest

from voxgate.agents.flowspec import (
    AskNode,
    HangupNode,
    IntentNode,
    TransferNode,
    parse_flow,
    static_prompts,
)
from voxgate.agents.templates import TemplateNotFoundError, get_template, list_templates


def test_list_templates() -> None:
    names = [t.name for t in list_templates()]
    assert names == sorted(names)
    assert {"demo-receptionist", "echo", "prompt"} <= set(names)
    for t in list_templates():
        assert t.summary()["name"] == t.name
        assert (t.flow is not None) == (t.kind == "flow")


def test_demo_receptionist_is_a_complete_flow() -> None:
    template = get_template("demo-receptionist")
    assert template.kind == "flow"
    doc = template.flow_document()
    assert doc is not None and doc["schema"] == "flowspec/1"
    flow, warnings = parse_flow(doc)
    assert warnings == []
    assert {i.name for i in flow.intents} == {"hours", "booking", "human", "goodbye"}
    kinds = {type(n) for n in flow.nodes}
    assert {IntentNode, AskNode, TransferNode, HangupNode} <= kinds
    asks = {n.slot for n in flow.nodes if isinstance(n, AskNode)}
    assert asks == {"date", "time", "confirm"}
    assert any("opening hours" in p for p in static_prompts(flow))


def test_echo_and_prompt_have_no_flow() -> None:
    assert get_template("echo").kind == "echo"
    assert get_template("echo").flow is None
    prompt = get_template("prompt")
    assert prompt.kind == "prompt" and prompt.prompt


@pytest.mark.parametrize("name", ["nope", "../flowspec", "", "demo-receptionist.json"])
def test_unknown_template(name: str) -> None:
    with pytest.raises(TemplateNotFoundError):
        get_template(name)
