"""A small, safe expression language for ``condition`` and ``set`` nodes.

Flows come from tenants, so expressions are never handed to ``eval``: they are
tokenised and parsed here into a tiny tree, and evaluation is total (a type
mismatch yields ``None``/``False`` instead of an exception) so a bad flow can
never crash a call.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") sum)?
    sum     := unary (("+" | "-") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | true | false | null | NAME | "(" expr ")"
             | "[" [expr ("," expr)*] "]"

A ``NAME`` reads a slot or variable (dotted names such as ``caller.number``
are one name); an unknown name is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_EXPRESSION_LENGTH = 500
MAX_DEPTH = 32

Value = str | int | float | bool | None | list["Value"]


class ExpressionError(ValueError):
    """The expression text is not valid; ``position`` is a character offset."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.position = position


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null", "none"}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # number | string | name | op | kw | end
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Literal:
    value: Value


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" | "-"
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Literal | Name | ListExpr | Unary | Binary


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        value = m.group()
        if kind != "ws":
            if kind == "name" and value.lower() in _KEYWORDS:
                tokens.append(_Tok("kw", value.lower(), pos))
            else:
                tokens.append(_Tok(kind, value, pos))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, text: str) -> None:
        self._toks = _tokenize(text)
        self._i = 0
        self._depth = 0

    def _peek(self) -> _Tok:
        return self._toks[self._i]

    def _next(self) -> _Tok:
        tok = self._toks[self._i]
        if tok.kind != "end":
            self._i += 1
        return tok

    def _accept(self, kind: str, text: str) -> bool:
        tok = self._peek()
        if tok.kind == kind and tok.text == text:
            self._i += 1
            return True
        return False

    def _expect(self, kind: str, text: str) -> None:
        if not self._accept(kind, text):
            tok = self._peek()
            raise ExpressionError(f"expected {text!r}", tok.pos)

    def parse(self) -> Node:
        node = self._or()
        tok = self._peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r}", tok.pos)
        return node

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ExpressionError("expression nested too deeply", self._peek().pos)

    def _or(self) -> Node:
        self._enter()
        node = self._and()
        while self._accept("kw", "or"):
            node = Binary("or", node, self._and())
        self._depth -= 1
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._accept("kw", "and"):
            node = Binary("and", node, self._not())
        return node

    def _not(self) -> Node:
        if self._accept("kw", "not"):
            self._enter()
            node = Unary("not", self._not())
            self._depth -= 1
            return node
        return self._cmp()

    def _cmp(self) -> Node:
        node = self._sum()
        tok = self._peek()
        if (tok.kind == "op" and tok.text in {"==", "!=", "<", "<=", ">", ">="}) or (
            tok.kind == "kw" and tok.text == "in"
        ):
            self._next()
            node = Binary(tok.text, node, self._sum())
        return node

    def _sum(self) -> Node:
        node = self._unary()
        while True:
            tok = self._peek()
            if tok.kind == "op" and tok.text in {"+", "-"}:
                self._next()
                node = Binary(tok.text, node, self._unary())
            else:
                return node

    def _unary(self) -> Node:
        if self._accept("op", "-"):
            self._enter()
            node = Unary("-", self._unary())
            self._depth -= 1
            return node
        return self._atom()

    def _atom(self) -> Node:
        tok = self._next()
        if tok.kind == "number":
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "string":
            return Literal(_unquote(tok.text))
        if tok.kind == "kw" and tok.text in {"true", "false"}:
            return Literal(tok.text == "true")
        if tok.kind == "kw" and tok.text in {"null", "none"}:
            return Literal(None)
        if tok.kind == "name":
            return Name(tok.text)
        if tok.kind == "op" and tok.text == "(":
            node = self._or()
            self._expect("op", ")")
            return node
        if tok.kind == "op" and tok.text == "[":
            items: list[Node] = []
            if not self._accept("op", "]"):
                items.append(self._or())
                while self._accept("op", ","):
                    items.append(self._or())
                self._expect("op", "]")
            return ListExpr(tuple(items))
        raise ExpressionError(
            "unexpected end of expression" if tok.kind == "end" else f"unexpected {tok.text!r}",
            tok.pos,
        )


def parse_expression(text: str) -> Node:
    """Parse ``text``; raises :class:`ExpressionError` when it is not valid."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"longer than {MAX_EXPRESSION_LENGTH} characters", 0)
    if not text.strip():
        raise ExpressionError("empty expression", 0)
    return _Parser(text).parse()


def truthy(value: object) -> bool:
    """Truth as a flow author expects it: empty/zero/None/False are false."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict):
        return bool(value)
    return True


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce_number(value: object) -> float | int | None:
    """Slots filled from speech are often numeric strings ("42"); compare them as numbers."""
    if _is_number(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _compare(op: str, left: object, right: object) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op == "in":
        if isinstance(right, list):
            return any(_equal(left, item) for item in right)
        if isinstance(right, str) and isinstance(left, str):
            return left.lower() in right.lower()
        return False
    ln, rn = _coerce_number(left), _coerce_number(right)
    a: object
    b: object
    if ln is not None and rn is not None:
        a, b = ln, rn
    elif isinstance(left, str) and isinstance(right, str):
        # ISO dates/times ("2025-03-04", "09:30") order correctly as strings.
        a, b = left, right
    else:
        return False
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


def _equal(left: object, right: object) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right or (
            isinstance(left, bool) and isinstance(right, bool) and left == right
        )
    ln, rn = _coerce_number(left), _coerce_number(right)
    if ln is not None and rn is not None and (_is_number(left) or _is_number(right)):
        return ln == rn
    if isinstance(left, str) and isinstance(right, str):
        return left.strip().lower() == right.strip().lower()
    return left == right


def evaluate(node: Node, scope: Mapping[str, object]) -> object:
    """Evaluate a parsed expression against slot/variable values; never raises."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Name):
        return scope.get(node.name)
    if isinstance(node, ListExpr):
        return [evaluate(item, scope) for item in node.items]
    if isinstance(node, Unary):
        operand = evaluate(node.operand, scope)
        if node.op == "not":
            return not truthy(operand)
        num = _coerce_number(operand)
        return -num if num is not None else None
    if node.op == "and":
        left = evaluate(node.left, scope)
        return evaluate(node.right, scope) if truthy(left) else left
    if node.op == "or":
        left = evaluate(node.left, scope)
        return left if truthy(left) else evaluate(node.right, scope)
    left = evaluate(node.left, scope)
    right = evaluate(node.right, scope)
    if node.op == "+":
        if isinstance(left, str) or isinstance(right, str):
            if left is None or right is None:
                return None
            return f"{left}{right}"
        ln, rn = _coerce_number(left), _coerce_number(right)
        return ln + rn if ln is not None and rn is not None else None
    if node.op == "-":
        ln, rn = _coerce_number(left), _coerce_number(right)
        return ln - rn if ln is not None and rn is not None else None
    return _compare(node.op, left, right)
