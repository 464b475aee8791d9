"""The safe expression language of condition/set nodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.agents.expression import ExpressionError, evaluate, parse_expression


@pytest.mark.parametrize(
    ("text", "scope", "expected"),
    [
        ("confirm == true", {"confirm": True}, True),
        ("confirm == true", {"confirm": 1}, False),  # booleans only equal booleans
        ("count + 1", {"count": 2}, 3),
        ("count >= 3", {"count": "3"}, True),  # numeric strings compare as numbers
        ("missing == null", {}, True),
        ("missing > 3", {}, False),
        ("name == 'ann'", {"name": " Ann "}, True),
        ("date < '2025-03-10'", {"date": "2025-03-05"}, True),
        ("a and not b", {"a": 1, "b": ""}, True),
        ("x or 'default'", {"x": None}, "default"),
        ("city in ['paris', 'rome']", {"city": "Rome"}, True),
        ("'part' in text", {"text": "a Partial match"}, True),
        ("-(n - 5)", {"n": 2}, 3),
        ("first + ' ' + last", {"first": "A", "last": "B"}, "A B"),
        ("n + 'x'", {"n": None}, None),
        ('caller.number == "+1"', {"caller.number": "+1"}, True),
        ("1.5 + 1", {}, 2.5),
    ],
)
def test_evaluate(text: str, scope: dict[str, object], expected: object) -> None:
    assert evaluate(parse_expression(text), scope) == expected


@pytest.mark.parametrize(
    "text", ["", "a ==", "(a", "a b", "1 +", "__import__('os')", "a; b", "x" * 501, "[1,", "a = 1"]
)
def test_invalid(text: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(text)


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(ExpressionError):
        parse_expression("(" * 40 + "1" + ")" * 40)
    with pytest.raises(ExpressionError):
        parse_expression("not " * 40 + "x")


@given(st.text(max_size=80))
def test_never_raises_anything_else(text: str) -> None:
    try:
        node = parse_expression(text)
    except ExpressionError:
        return
    evaluate(node, {"a": 1, "b": "x", "c": None})
