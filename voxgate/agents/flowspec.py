"""``flowspec/1``: the neutral JSON document that describes an agent's conversation.

The structs here are the single source of truth for the document's shape; the
engine, the preview, the exporters and the HTTP API all read flows through
:func:`parse_flow`, which turns any input into either a valid :class:`FlowSpec`
(plus warnings) or a :class:`FlowValidationError` naming the offending path
(``$.nodes[3].type``). It never raises anything else, whatever it is given.

Text fields may contain ``{name}`` placeholders (a slot, a variable, or
``last_utterance``/``intent``); a text without placeholders is *static* and can
be synthesized once per agent version (see :func:`static_prompts`).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Annotated, Any, Literal

import msgspec

from voxgate.agents.expression import ExpressionError, parse_expression

SCHEMA = "flowspec/1"

# Words the engine speaks when a flow leaves them out; listed here so the prompt
# cache sees every constant text a flow can produce.
DEFAULT_NO_MATCH_TEXT = "Sorry, I didn't catch that."
DEFAULT_NO_INPUT_TEXT = "Are you still there?"

MAX_TEXT = 2000
MAX_ID = 128

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID, pattern=r"^[A-Za-z0-9_.:\-]+$")]
SlotName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
Example = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
SlotKind = Literal["date", "time", "number", "yes_no", "digits", "free_text"]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=30)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=10)]


class FlowValidationError(ValueError):
    """A flow document is invalid; ``path`` points at the offending value."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class FlowWarning(msgspec.Struct, frozen=True):
    """Something legal but probably unintended (e.g. an unreachable node)."""

    path: str
    message: str


# --- top-level parts -------------------------------------------------------


class Slot(msgspec.Struct, frozen=True, omit_defaults=True):
    """A value the conversation collects; ``kind`` selects the parser."""

    name: SlotName
    kind: SlotKind = "free_text"


class Intent(msgspec.Struct, frozen=True, omit_defaults=True):
    """A caller goal with training examples.

    ``slots`` lists slots the engine may fill from the same utterance (e.g. a
    booking request that already says "tomorrow morning").
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    examples: Annotated[list[Example], msgspec.Meta(max_length=1000)] = []
    slots: list[SlotName] = []


class EntityValue(msgspec.Struct, frozen=True, omit_defaults=True):
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    synonyms: list[Annotated[str, msgspec.Meta(max_length=200)]] = []


class Entity(msgspec.Struct, frozen=True, omit_defaults=True):
    """A named list of values (with synonyms) for exporters and free-text slots."""

    name: SlotName
    values: Annotated[list[EntityValue], msgspec.Meta(max_length=5000)] = []


class Global(msgspec.Struct, frozen=True, omit_defaults=True):
    """A global route: whenever the caller expresses ``intent``, jump to ``target``.

    Checked while the engine listens in ``ask`` nodes, so a caller can leave a
    form ("I want to speak to a person") at any point.
    """

    intent: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    target: Id


class Edge(msgspec.Struct, frozen=True, omit_defaults=True):
    id: Id
    source: Id
    port: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    target: Id


# --- nodes -----------------------------------------------------------------


class _NodeBase(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    id: Id
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""


class StartNode(_NodeBase, frozen=True, tag="start"):
    """Where every call begins; leaves through ``next``."""


class SayNode(_NodeBase, frozen=True, tag="say"):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    barge_in: bool = True


class AskNode(_NodeBase, frozen=True, tag="ask"):
    """Speaks ``text`` and fills ``slot`` from the answer (or DTMF).

    ``kind`` defaults to the slot's declared kind. When the slot is already
    filled (e.g. from the intent utterance) and ``skip_if_filled`` is set, the
    node leaves through ``filled`` at once.
    """

    slot: SlotName
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    kind: SlotKind | None = None
    reprompt: Text | None = None
    no_input_text: Text | None = None
    max_retries: Retries | None = None
    max_digits: Annotated[int, msgspec.Meta(ge=1, le=32)] | None = None
    skip_if_filled: bool = True
    barge_in: bool = True


class IntentNode(_NodeBase, frozen=True, tag="intent"):
    """Listens and routes on the document's intents (a port each + ``fallback``)."""

    text: Text | None = None
    reprompt: Text | None = None
    no_input_text: Text | None = None
    max_retries: Retries | None = None
    threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    dtmf: dict[Annotated[str, msgspec.Meta(pattern=r"^[0-9*#]$")], str] = {}
    barge_in: bool = True


class Rule(msgspec.Struct, frozen=True, omit_defaults=True):
    port: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    when: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class ConditionNode(_NodeBase, frozen=True, tag="condition"):
    """First rule whose ``when`` is true picks the port; otherwise ``else``."""

    rules: Annotated[list[Rule], msgspec.Meta(max_length=50)] = []


class Assignment(msgspec.Struct, frozen=True):
    slot: SlotName
    expr: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class SetNode(_NodeBase, frozen=True, tag="set"):
    assignments: Annotated[list[Assignment], msgspec.Meta(max_length=50)] = []


class KnowledgeNode(_NodeBase, frozen=True, tag="knowledge"):
    """Looks ``query`` up in the tenant's knowledge; speaks the answer when found."""

    query: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)] = "{last_utterance}"
    result_slot: SlotName | None = None
    say_answer: bool = True


class LlmNode(_NodeBase, frozen=True, tag="llm"):
    """Asks the tenant's LLM; the reply is spoken sentence by sentence as it streams."""

    system: Text = ""
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)] = "{last_utterance}"
    result_slot: SlotName | None = None
    history: bool = True
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=4096)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=120)] = 30.0


class WebhookNode(_NodeBase, frozen=True, tag="webhook"):
    """POSTs the call's slots to ``url`` (signed); JSON answers may update slots."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    timeout: Timeout = 5.0
    result_slot: SlotName | None = None


class TransferNode(_NodeBase, frozen=True, tag="transfer"):
    """Hands the call to ``target`` (a tenant's named target or an E.164 number).

    A refused or failed transfer leaves through the ``failed`` port when it is
    wired; otherwise the call ends with an apology.
    """

    target: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    text: Text | None = None


class HangupNode(_NodeBase, frozen=True, tag="hangup"):
    text: Text | None = None


class SubflowNode(_NodeBase, frozen=True, tag="subflow"):
    """Runs another flow of the same tenant, then continues through ``next``."""

    flow: Id


Node = (
    StartNode
    | SayNode
    | AskNode
    | IntentNode
    | ConditionNode
    | SetNode
    | KnowledgeNode
    | LlmNode
    | WebhookNode
    | TransferNode
    | HangupNode
    | SubflowNode
)

NODE_TYPES: tuple[str, ...] = (
    "start",
    "say",
    "ask",
    "intent",
    "condition",
    "set",
    "knowledge",
    "llm",
    "webhook",
    "transfer",
    "hangup",
    "subflow",
)


class FlowSpec(msgspec.Struct, frozen=True):
    """A whole ``flowspec/1`` document."""

    schema: str
    id: Id
    nodes: Annotated[list[Node], msgspec.Meta(max_length=1000)]
    edges: Annotated[list[Edge], msgspec.Meta(max_length=5000)] = []
    locale: Annotated[str, msgspec.Meta(max_length=35)] = "en-US"
    slots: Annotated[list[Slot], msgspec.Meta(max_length=200)] = []
    intents: Annotated[list[Intent], msgspec.Meta(max_length=200)] = []
    entities: Annotated[list[Entity], msgspec.Meta(max_length=200)] = []
    globals: Annotated[list[Global], msgspec.Meta(max_length=50)] = []
    layout: dict[str, Any] = {}

    def node(self, node_id: str) -> Node | None:
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None


def node_type(node: Node) -> str:
    """The ``type`` tag of a node."""
    tag = type(node).__struct_config__.tag
    return str(tag)


def node_ports(node: Node, flow: FlowSpec) -> tuple[str, ...]:
    """The ports a node may leave through (edges on other ports are invalid)."""
    if isinstance(node, StartNode | SayNode | SetNode):
        return ("next",)
    if isinstance(node, AskNode):
        return ("filled", "no_match", "no_input")
    if isinstance(node, IntentNode):
        return (*(i.name for i in flow.intents), "fallback")
    if isinstance(node, ConditionNode):
        return (*(r.port for r in node.rules), "else")
    if isinstance(node, KnowledgeNode):
        return ("found", "not_found")
    if isinstance(node, WebhookNode):
        return ("success", "error")
    if isinstance(node, LlmNode | SubflowNode):
        return ("next", "error")
    if isinstance(node, TransferNode):
        return ("failed",)  # the call stays with the agent when the transfer fails
    return ()  # hangup: the call leaves the flow


_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def placeholders(text: str) -> list[str]:
    """Names used as ``{name}`` in ``text``."""
    return _PLACEHOLDER_RE.findall(text)


def is_static(text: str) -> bool:
    return not _PLACEHOLDER_RE.search(text)


def render(text: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders; unknown names become empty strings."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), ""), text)


_MSGSPEC_PATH_RE = re.compile(
    r"^(?P<msg>.*?)(?: - at (?P<key>`key` in )?`(?P<path>\$[^`]*)`)?$", re.DOTALL
)


_MISSING_FIELD_RE = re.compile(r"^Object missing required field `([^`]+)`$")


def _from_msgspec_error(err: msgspec.ValidationError) -> FlowValidationError:
    m = _MSGSPEC_PATH_RE.match(str(err))
    if m is None:  # pragma: no cover - the pattern matches any string
        return FlowValidationError("$", str(err))
    path, message = m.group("path") or "$", m.group("msg")
    if m.group("key"):
        message = f"{message} (in a key)"
    missing = _MISSING_FIELD_RE.match(message)
    if missing is not None:
        path = f"{path}.{missing.group(1)}"
    return FlowValidationError(path, message)


def parse_flow(doc: object) -> tuple[FlowSpec, list[FlowWarning]]:
    """Validate ``doc`` (a decoded JSON value, or JSON text/bytes) into a flow.

    Raises :class:`FlowValidationError` for every kind of bad input and nothing
    else.
    """
    try:
        if isinstance(doc, str | bytes | bytearray | memoryview):
            try:
                doc = msgspec.json.decode(doc)
            except msgspec.DecodeError as exc:
                raise FlowValidationError("$", f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise FlowValidationError("$", "a flow must be a JSON object")
        schema = doc.get("schema")
        if schema != SCHEMA:
            raise FlowValidationError("$.schema", f"expected {SCHEMA!r}, got {schema!r}")
        try:
            flow = msgspec.convert(doc, FlowSpec)
        except msgspec.ValidationError as exc:
            raise _from_msgspec_error(exc) from None
        return flow, _check(flow)
    except FlowValidationError:
        raise
    except Exception as exc:
        # The contract is "only FlowValidationError", whatever the input (deep nesting included).
        raise FlowValidationError("$", f"invalid flow document ({type(exc).__name__})") from None


def _check_expression(text: str, path: str) -> None:
    try:
        parse_expression(text)
    except ExpressionError as exc:
        raise FlowValidationError(path, f"invalid expression: {exc}") from None


def _check(flow: FlowSpec) -> list[FlowWarning]:
    warnings: list[FlowWarning] = []

    slot_kinds: dict[str, str] = {}
    for i, slot in enumerate(flow.slots):
        if slot.name in slot_kinds:
            raise FlowValidationError(f"$.slots[{i}].name", f"duplicate slot {slot.name!r}")
        slot_kinds[slot.name] = slot.kind

    intent_names: set[str] = set()
    for i, intent in enumerate(flow.intents):
        if intent.name == "fallback":
            raise FlowValidationError(
                f"$.intents[{i}].name", "'fallback' is reserved for the fallback port"
            )
        if intent.name in intent_names:
            raise FlowValidationError(f"$.intents[{i}].name", f"duplicate intent {intent.name!r}")
        intent_names.add(intent.name)
        if not intent.examples:
            warnings.append(
                FlowWarning(f"$.intents[{i}].examples", "intent has no examples; it never matches")
            )

    ids: dict[str, int] = {}
    start_ids: list[str] = []
    for i, node in enumerate(flow.nodes):
        path = f"$.nodes[{i}]"
        if node.id in ids:
            raise FlowValidationError(f"{path}.id", f"duplicate node id {node.id!r}")
        ids[node.id] = i
        if isinstance(node, StartNode):
            if start_ids:
                raise FlowValidationError(f"{path}.type", "a flow has exactly one start node")
            start_ids.append(node.id)
        elif isinstance(node, AskNode):
            declared = slot_kinds.get(node.slot)
            if declared is not None and node.kind is not None and node.kind != declared:
                raise FlowValidationError(
                    f"{path}.kind",
                    f"slot {node.slot!r} is declared as {declared!r}, not {node.kind!r}",
                )
        elif isinstance(node, IntentNode):
            if not flow.intents:
                warnings.append(
                    FlowWarning(path, "the flow has no intents; every answer goes to fallback")
                )
            for digit, name in node.dtmf.items():
                if name not in intent_names:
                    raise FlowValidationError(
                        f"$.nodes[{i}].dtmf[{digit!r}]", f"unknown intent {name!r}"
                    )
        elif isinstance(node, ConditionNode):
            seen: set[str] = set()
            for j, rule in enumerate(node.rules):
                if rule.port == "else" or rule.port in seen:
                    raise FlowValidationError(
                        f"{path}.rules[{j}].port", f"duplicate or reserved port {rule.port!r}"
                    )
                seen.add(rule.port)
                _check_expression(rule.when, f"{path}.rules[{j}].when")
        elif isinstance(node, SetNode):
            for j, assignment in enumerate(node.assignments):
                _check_expression(assignment.expr, f"{path}.assignments[{j}].expr")
        elif isinstance(node, WebhookNode):
            if not node.url.startswith(("https://", "http://")):
                raise FlowValidationError(f"{path}.url", "webhook url must be http(s)")
            if node.url.startswith("http://"):
                warnings.append(
                    FlowWarning(f"{path}.url", "plain http webhook: the body is not encrypted")
                )
    if not start_ids:
        raise FlowValidationError("$.nodes", "the flow has no start node")

    for i, glob in enumerate(flow.globals):
        if glob.intent not in intent_names:
            raise FlowValidationError(f"$.globals[{i}].intent", f"unknown intent {glob.intent!r}")
        if glob.target not in ids:
            raise FlowValidationError(f"$.globals[{i}].target", f"no node {glob.target!r}")

    for i, intent in enumerate(flow.intents):
        for j, slot_name in enumerate(intent.slots):
            if slot_name not in slot_kinds:
                raise FlowValidationError(
                    f"$.intents[{i}].slots[{j}]", f"slot {slot_name!r} is not declared in $.slots"
                )

    edge_ids: set[str] = set()
    used_ports: set[tuple[str, str]] = set()
    successors: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for i, edge in enumerate(flow.edges):
        path = f"$.edges[{i}]"
        if edge.id in edge_ids:
            raise FlowValidationError(f"{path}.id", f"duplicate edge id {edge.id!r}")
        edge_ids.add(edge.id)
        if edge.source not in ids:
            raise FlowValidationError(f"{path}.source", f"no node {edge.source!r}")
        if edge.target not in ids:
            raise FlowValidationError(f"{path}.target", f"no node {edge.target!r}")
        source = flow.nodes[ids[edge.source]]
        ports = node_ports(source, flow)
        if edge.port not in ports:
            allowed = ", ".join(ports) if ports else "none"
            raise FlowValidationError(
                f"{path}.port",
                f"{node_type(source)} node {edge.source!r} has no port {edge.port!r} "
                f"(allowed: {allowed})",
            )
        if (edge.source, edge.port) in used_ports:
            raise FlowValidationError(
                f"{path}.port", f"port {edge.port!r} of {edge.source!r} already has an edge"
            )
        used_ports.add((edge.source, edge.port))
        if isinstance(flow.nodes[ids[edge.target]], StartNode):
            raise FlowValidationError(f"{path}.target", "the start node cannot be a target")
        successors[edge.source].append(edge.target)
    for glob in flow.globals:
        # Global routes can fire from any listening node, so their targets are reachable.
        successors[start_ids[0]].append(glob.target)

    reachable: set[str] = {start_ids[0]}
    queue = deque([start_ids[0]])
    while queue:
        for nxt in successors[queue.popleft()]:
            if nxt not in reachable:
                reachable.add(nxt)
                queue.append(nxt)
    for i, node in enumerate(flow.nodes):
        if node.id not in reachable:
            warnings.append(FlowWarning(f"$.nodes[{i}]", f"node {node.id!r} is unreachable"))
    return warnings


def flow_to_dict(flow: FlowSpec) -> dict[str, Any]:
    """The JSON-ready document for ``flow`` (defaults omitted)."""
    out = msgspec.to_builtins(flow)
    assert isinstance(out, dict)  # a Struct always encodes to a dict
    return out


def static_prompts(flow: FlowSpec) -> list[str]:
    """Every constant text the engine may speak for ``flow``, without duplicates.

    Texts with ``{placeholders}`` are excluded: they depend on the call.
    """
    texts: list[str] = []

    def add(text: str | None) -> None:
        if text and is_static(text) and text not in texts:
            texts.append(text)

    for node in flow.nodes:
        if isinstance(node, SayNode):
            add(node.text)
        elif isinstance(node, AskNode | IntentNode):
            add(node.text)
            add(node.reprompt if node.reprompt else DEFAULT_NO_MATCH_TEXT)
            add(node.no_input_text if node.no_input_text else DEFAULT_NO_INPUT_TEXT)
        elif isinstance(node, TransferNode | HangupNode):
            add(node.text)
    return texts
