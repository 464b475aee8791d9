"""Sans-IO ``flowspec/1`` engine: feed it caller events and ``now``, get actions back.

The engine never touches a socket, a model or the clock. The speech pipeline
(or the text preview) calls :meth:`FlowEngine.start`, then forwards final
transcripts, DTMF digits, "prompt finished playing" and external results, and
calls :meth:`FlowEngine.on_timer` when ``now >= next_timeout()``. Every call
returns a list of :data:`Action` to carry out in order.

Side work (LLM, webhooks, knowledge) is requested with ``Call*``/``Query*``
actions carrying a ``request_id``; the owner answers with :meth:`on_result`.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from voxgate.agents.expression import Node as ExprNode
from voxgate.agents.expression import evaluate, parse_expression, truthy
from voxgate.agents.flowspec import (
    DEFAULT_NO_INPUT_TEXT,
    DEFAULT_NO_MATCH_TEXT,
    AskNode,
    ConditionNode,
    FlowSpec,
    HangupNode,
    IntentNode,
    KnowledgeNode,
    LlmNode,
    SayNode,
    SetNode,
    StartNode,
    SubflowNode,
    TransferNode,
    WebhookNode,
    is_static,
    render,
)
from voxgate.agents.flowspec import Node as FlowNode
from voxgate.agents.intent import IntentClassifier
from voxgate.agents.slots import extract_slot, parse_dtmf, parse_slot, spoken

MAX_STEPS_PER_TURN = 64
MAX_SUBFLOW_DEPTH = 4
MAX_HISTORY = 20
DTMF_INTER_DIGIT_TIMEOUT = 3.0
KNOWLEDGE_TIMEOUT = 10.0
# Grace on top of a request's own timeout before the engine gives up on an answer.
EXTERNAL_GRACE = 2.0
# Global routes interrupt a form, so they need more confidence than an intent node.
GLOBAL_INTENT_THRESHOLD = 0.55

_REPEAT_RE = re.compile(
    r"\b(repeat|say (that|it) again|come again|pardon|didn'?t (hear|catch)|what did you say)\b",
    re.IGNORECASE,
)


# --- actions -----------------------------------------------------------------


class Say(msgspec.Struct, frozen=True, tag="say", tag_field="type"):
    """Speak ``text``; ``static`` texts are flow constants (cacheable audio)."""

    text: str
    static: bool
    barge_in: bool
    node_id: str


class Listen(msgspec.Struct, frozen=True, tag="listen", tag_field="type"):
    """The engine now waits for the caller (``kind`` is a slot kind or ``intent``)."""

    node_id: str
    slot: str | None
    kind: str


class IntentMatched(msgspec.Struct, frozen=True, tag="intent_matched", tag_field="type"):
    intent: str
    confidence: float
    node_id: str


class SlotFilled(msgspec.Struct, frozen=True, tag="slot_filled", tag_field="type"):
    slot: str
    value: Any
    node_id: str


class Transfer(msgspec.Struct, frozen=True, tag="transfer", tag_field="type"):
    target: str
    node_id: str


class Hangup(msgspec.Struct, frozen=True, tag="hangup", tag_field="type"):
    """End the call. ``reason``: ``flow_hangup``, ``end_of_flow``, ``no_input``,
    ``no_match``, ``loop_limit`` or ``subflow_missing``."""

    reason: str
    node_id: str


class CallLlm(msgspec.Struct, frozen=True, tag="call_llm", tag_field="type"):
    request_id: str
    messages: list[dict[str, str]]
    node_id: str
    options: dict[str, Any]


class CallWebhook(msgspec.Struct, frozen=True, tag="call_webhook", tag_field="type"):
    request_id: str
    url: str
    body: dict[str, Any]
    timeout: float
    node_id: str


class QueryKnowledge(msgspec.Struct, frozen=True, tag="query_knowledge", tag_field="type"):
    request_id: str
    query: str
    node_id: str


Action = (
    Say
    | Listen
    | IntentMatched
    | SlotFilled
    | Transfer
    | Hangup
    | CallLlm
    | CallWebhook
    | QueryKnowledge
)


class ExternalResult(msgspec.Struct, frozen=True):
    """The answer to a ``CallLlm``/``CallWebhook``/``QueryKnowledge`` request."""

    ok: bool
    text: str = ""
    data: dict[str, Any] = {}
    error: str = ""


class FlowEngineError(RuntimeError):
    """The engine was driven wrongly (our own bug, not the caller's or the flow's)."""


# --- state -------------------------------------------------------------------


class State(enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    WAITING = "waiting"  # for an external result
    FINISHED = "finished"


class Event(enum.Enum):
    START = "start"
    UTTERANCE = "utterance"
    DTMF = "dtmf"
    PROMPT_PLAYED = "prompt_played"
    TIMER = "timer"
    RESULT = "result"


# Which events each state reacts to; any other event is ignored (e.g. a late
# transcript after hangup, or speech while a webhook is still running).
ACCEPTED_EVENTS: dict[State, frozenset[Event]] = {
    State.IDLE: frozenset({Event.START}),
    State.LISTENING: frozenset({Event.UTTERANCE, Event.DTMF, Event.PROMPT_PLAYED, Event.TIMER}),
    State.WAITING: frozenset({Event.RESULT, Event.TIMER}),
    State.FINISHED: frozenset(),
}


@dataclass(slots=True)
class _Graph:
    """Lookup tables for one flow document."""

    flow: FlowSpec
    nodes: dict[str, FlowNode]
    edges: dict[tuple[str, str], str]
    slot_kinds: dict[str, str]
    start: str
    conditions: dict[tuple[str, int], ExprNode]
    assignments: dict[tuple[str, int], ExprNode]
    globals: dict[str, str]
    classifier: IntentClassifier

    @classmethod
    def build(cls, flow: FlowSpec, classifier: IntentClassifier | None) -> _Graph:
        nodes = {n.id: n for n in flow.nodes}
        kinds = {s.name: str(s.kind) for s in flow.slots}
        conditions: dict[tuple[str, int], ExprNode] = {}
        assignments: dict[tuple[str, int], ExprNode] = {}
        start = ""
        for node in flow.nodes:
            if isinstance(node, StartNode):
                start = node.id
            elif isinstance(node, AskNode):
                kinds.setdefault(node.slot, node.kind or "free_text")
            elif isinstance(node, ConditionNode):
                for i, rule in enumerate(node.rules):
                    conditions[(node.id, i)] = parse_expression(rule.when)
            elif isinstance(node, SetNode):
                for i, assignment in enumerate(node.assignments):
                    assignments[(node.id, i)] = parse_expression(assignment.expr)
        if not start:
            raise FlowEngineError(f"flow {flow.id!r} has no start node (was it validated?)")
        return cls(
            flow=flow,
            nodes=nodes,
            edges={(e.source, e.port): e.target for e in flow.edges},
            slot_kinds=kinds,
            start=start,
            conditions=conditions,
            assignments=assignments,
            globals={g.intent: g.target for g in flow.globals},
            classifier=classifier or IntentClassifier.from_intents(flow.intents),
        )


@dataclass(slots=True)
class _Frame:
    graph: _Graph
    caller: str | None  # subflow node in the parent frame, None for the main flow


@dataclass(slots=True)
class _Turn:
    """Bookkeeping for one public call."""

    now: float
    actions: list[Action] = field(default_factory=list)
    steps: int = 0
    spoke: bool = False


class FlowEngine:
    """Runs one conversation of a ``flowspec/1`` flow; see the module docstring."""

    def __init__(
        self,
        flow: FlowSpec,
        *,
        classifier: IntentClassifier | None = None,
        variables: dict[str, str] | None = None,
        no_input_timeout: float = 6.0,
        max_retries: int = 2,
        today: dt.date | None = None,
        subflows: Mapping[str, FlowSpec] | None = None,
    ) -> None:
        self._main = _Graph.build(flow, classifier)
        self._stack: list[_Frame] = [_Frame(self._main, None)]
        self._subflows = dict(subflows or {})
        self._subgraphs: dict[str, _Graph] = {}
        self._variables = dict(variables or {})
        self._no_input_timeout = no_input_timeout
        self._max_retries = max_retries
        self._today = today or dt.date.today()
        self._state = State.IDLE
        self._node_id = ""
        self._slots: dict[str, Any] = {}
        self._last_utterance = ""
        self._last_intent = ""
        self._history: list[dict[str, str]] = []
        self._no_match = 0
        self._no_input = 0
        self._prompt: list[Say] = []  # what the current listening node last asked
        # Everything the agent said in its latest turn: what "say that again" replays.
        self._last_spoken: list[Say] = []
        self._speaking_turn: _Turn | None = None
        self._no_input_deadline: float | None = None
        self._digits = ""
        self._digit_deadline: float | None = None
        self._request_seq = 0
        self._pending_request: str | None = None
        self._transfer_node: str | None = None  # asked for a transfer from here
        self._caller_speaking = False  # between on_caller_speaking and its outcome
        self._pending_deadline: float | None = None

    # --- public API ------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def finished(self) -> bool:
        return self._state is State.FINISHED

    @property
    def listening(self) -> bool:
        return self._state is State.LISTENING

    @property
    def slots(self) -> dict[str, object]:
        return dict(self._slots)

    @property
    def node_id(self) -> str:
        """The node the engine is at (listening, waiting, or where it finished)."""
        return self._node_id

    def start(self, now: float) -> list[Action]:
        """Run from the start node until the flow waits for input or ends."""
        if self._state is not State.IDLE:
            raise FlowEngineError("start() called twice")
        turn = _Turn(now)
        self._run(self._graph.start, turn)
        return turn.actions

    def on_utterance(self, text: str, now: float) -> list[Action]:
        """A final transcript of what the caller said."""
        self._caller_speaking = False
        if not self._accepts(Event.UTTERANCE) or not text.strip():
            return []
        turn = _Turn(now)
        self._no_input_deadline = None
        self._last_utterance = text.strip()
        self._remember("user", self._last_utterance)
        node = self._graph.nodes[self._node_id]
        if _REPEAT_RE.search(text):
            self._repeat_prompt(node, turn)
            return turn.actions
        if isinstance(node, AskNode):
            self._answer_ask(node, text, turn)
        elif isinstance(node, IntentNode):
            self._answer_intent(node, text, turn)
        return turn.actions

    def on_dtmf(self, digit: str, now: float) -> list[Action]:
        """One keypad digit (``0-9``, ``*``, ``#``)."""
        if not self._accepts(Event.DTMF) or len(digit) != 1 or digit not in "0123456789*#":
            return []
        turn = _Turn(now)
        self._no_input_deadline = None
        node = self._graph.nodes[self._node_id]
        if isinstance(node, IntentNode):
            name = node.dtmf.get(digit)
            if name is None:
                self._no_match_retry(node, turn)
            else:
                self._route_intent(node, name, 1.0, turn)
            return turn.actions
        if not isinstance(node, AskNode):
            return []
        kind = self._kind(node)
        if kind == "yes_no":
            self._fill_from_dtmf(node, digit, turn)
            return turn.actions
        if digit != "#":
            self._digits += digit
        limit = node.max_digits or (4 if kind == "time" else 32)
        if digit == "#" or len(self._digits) >= limit:
            self._fill_from_dtmf(node, self._digits, turn)
        else:
            self._digit_deadline = now + DTMF_INTER_DIGIT_TIMEOUT
        return turn.actions

    def on_prompt_played(self, now: float) -> list[Action]:
        """Every ``Say`` so far has finished playing: start the no-input timer."""
        if (
            self._accepts(Event.PROMPT_PLAYED)
            and self._no_input_deadline is None
            and (not self._digits)
            and not self._caller_speaking
        ):
            self._no_input_deadline = now + self._no_input_timeout
        return []

    def next_timeout(self) -> float | None:
        """When :meth:`on_timer` must next be called (``None``: no timer)."""
        deadlines = [
            d
            for d in (self._no_input_deadline, self._digit_deadline, self._pending_deadline)
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def on_caller_speaking(self, now: float) -> None:
        """The caller started talking: silence is not "no input" while they speak
        and their words are being recognised.  ``on_utterance`` or
        :meth:`on_caller_silent` follows."""
        self._caller_speaking = True
        if self._state is State.LISTENING:
            self._no_input_deadline = None

    def on_caller_silent(self, now: float) -> None:
        """What the caller said yielded no words: the no-input wait starts again."""
        self._caller_speaking = False
        if self._state is State.LISTENING and self._no_input_deadline is None:
            self._no_input_deadline = now + self._no_input_timeout

    def on_transfer_failed(self, now: float) -> list[Action]:
        """The transfer this flow asked for did not happen: follow its ``failed`` port.

        Returns no actions when the transfer node has no ``failed`` edge (or no
        transfer is outstanding); the owner then ends the call its own way.
        """
        node_id, self._transfer_node = self._transfer_node, None
        if node_id is None or (node_id, "failed") not in self._graph.edges:
            return []
        turn = _Turn(now)
        self._state = State.IDLE
        self._follow(self._graph.nodes[node_id], "failed", turn)
        return turn.actions

    def on_timer(self, now: float) -> list[Action]:
        """Handle every deadline that is due at ``now``."""
        if not self._accepts(Event.TIMER):
            return []
        turn = _Turn(now)
        if self._pending_deadline is not None and now >= self._pending_deadline:
            request_id = self._pending_request or ""
            self._pending_deadline = None
            return self.on_result(request_id, ExternalResult(ok=False, error="timeout"), now)
        if self._digit_deadline is not None and now >= self._digit_deadline:
            node = self._graph.nodes[self._node_id]
            if isinstance(node, AskNode):
                self._fill_from_dtmf(node, self._digits, turn)
            return turn.actions
        if self._no_input_deadline is not None and now >= self._no_input_deadline:
            self._no_input_deadline = None
            self._no_input_timeout_reached(turn)
        return turn.actions

    def on_result(self, request_id: str, result: ExternalResult, now: float) -> list[Action]:
        """The answer to a pending request; stale or unknown ids are ignored."""
        if not self._accepts(Event.RESULT) or request_id != self._pending_request:
            return []
        self._pending_request = None
        self._pending_deadline = None
        turn = _Turn(now)
        node = self._graph.nodes[self._node_id]
        if isinstance(node, KnowledgeNode):
            if result.ok and result.text:
                if node.result_slot:
                    self._set_slot(node.result_slot, result.text, node.id, turn)
                if node.say_answer:
                    self._say(result.text, node.id, turn, external=True)
                self._follow(node, "found", turn)
            else:
                self._follow(node, "not_found", turn)
        elif isinstance(node, LlmNode):
            if result.ok:
                if result.text:
                    # The owner already spoke the reply while it streamed.
                    turn.spoke = True
                    self._remember("assistant", result.text)
                if node.result_slot:
                    self._set_slot(node.result_slot, result.text, node.id, turn)
                self._follow(node, "next", turn)
            else:
                port = "error" if (node.id, "error") in self._graph.edges else "next"
                self._follow(node, port, turn)
        elif isinstance(node, WebhookNode):
            if result.ok:
                self._apply_webhook_data(node, result.data, turn)
                self._follow(node, "success", turn)
            else:
                self._follow(node, "error", turn)
        return turn.actions

    def vocabulary_hints(self) -> list[str]:
        """Distinctive words callers are likely to say (for STT prompts/hotwords)."""
        words: dict[str, None] = {}
        for frame in self._stack[:1] + [_Frame(g, None) for g in self._subgraphs.values()]:
            for intent in frame.graph.flow.intents:
                for example in intent.examples:
                    for word in re.findall(r"[A-Za-z][A-Za-z']+", example):
                        if word.lower() not in _STOPWORDS:
                            words.setdefault(word.lower(), None)
            for entity in frame.graph.flow.entities:
                for value in entity.values:
                    words.setdefault(value.value, None)
            kinds = set(frame.graph.slot_kinds.values())
            if "date" in kinds:
                for name in (
                    "today",
                    "tomorrow",
                    "Monday",
                    "Tuesday",
                    "Wednesday",
                    "Thursday",
                    "Friday",
                    "Saturday",
                    "Sunday",
                ):
                    words.setdefault(name, None)
            if "time" in kinds:
                for name in ("AM", "PM", "morning", "afternoon", "evening", "half past"):
                    words.setdefault(name, None)
        return list(words)[:200]

    # --- running nodes -----------------------------------------------------------

    @property
    def _graph(self) -> _Graph:
        return self._stack[-1].graph

    def _accepts(self, event: Event) -> bool:
        return event in ACCEPTED_EVENTS[self._state]

    def _run(self, node_id: str, turn: _Turn) -> None:
        """Walk from ``node_id`` until a node waits (listen/external) or the call ends."""
        next_id: str | None = node_id
        while next_id is not None:
            turn.steps += 1
            if turn.steps > MAX_STEPS_PER_TURN:
                self._finish(Hangup("loop_limit", next_id), turn)
                return
            self._node_id = next_id
            next_id = self._visit(self._graph.nodes[next_id], turn)

    def _visit(self, node: FlowNode, turn: _Turn) -> str | None:
        """Execute one node; returns the next node id, or ``None`` when stopping here."""
        if isinstance(node, StartNode):
            return self._target(node, "next", turn)
        if isinstance(node, SayNode):
            self._say(node.text, node.id, turn, barge_in=node.barge_in)
            return self._target(node, "next", turn)
        if isinstance(node, AskNode):
            if node.skip_if_filled and self._slots.get(node.slot) is not None:
                return self._target(node, "filled", turn)
            self._no_match = self._no_input = 0
            self._prompt = [self._say(node.text, node.id, turn, barge_in=node.barge_in)]
            self._listen(node, turn)
            return None
        if isinstance(node, IntentNode):
            self._no_match = self._no_input = 0
            self._prompt = (
                [self._say(node.text, node.id, turn, barge_in=node.barge_in)] if node.text else []
            )
            self._listen(node, turn)
            return None
        if isinstance(node, ConditionNode):
            scope = self._scope()
            for i, rule in enumerate(node.rules):
                if truthy(evaluate(self._graph.conditions[(node.id, i)], scope)):
                    return self._target(node, rule.port, turn)
            return self._target(node, "else", turn)
        if isinstance(node, SetNode):
            for i, assignment in enumerate(node.assignments):
                value = evaluate(self._graph.assignments[(node.id, i)], self._scope())
                self._set_slot(assignment.slot, value, node.id, turn)
            return self._target(node, "next", turn)
        if isinstance(node, KnowledgeNode):
            request_id = self._wait(turn.now + KNOWLEDGE_TIMEOUT)
            turn.actions.append(QueryKnowledge(request_id, self._render(node.query), node.id))
            return None
        if isinstance(node, LlmNode):
            request_id = self._wait(turn.now + node.timeout + EXTERNAL_GRACE)
            turn.actions.append(
                CallLlm(request_id, self._llm_messages(node), node.id, self._llm_options(node))
            )
            return None
        if isinstance(node, WebhookNode):
            request_id = self._wait(turn.now + node.timeout + EXTERNAL_GRACE)
            body: dict[str, Any] = {
                "flow_id": self._graph.flow.id,
                "node_id": node.id,
                "slots": dict(self._slots),
                "variables": dict(self._variables),
                "last_utterance": self._last_utterance,
                "intent": self._last_intent,
            }
            turn.actions.append(CallWebhook(request_id, node.url, body, node.timeout, node.id))
            return None
        if isinstance(node, TransferNode):
            if node.text:
                self._say(node.text, node.id, turn, barge_in=False)
            self._finish(Transfer(self._render(node.target), node.id), turn)
            self._transfer_node = node.id
            return None
        if isinstance(node, HangupNode):
            if node.text:
                self._say(node.text, node.id, turn, barge_in=False)
            self._finish(Hangup("flow_hangup", node.id), turn)
            return None
        return self._enter_subflow(node, turn)

    def _enter_subflow(self, node: SubflowNode, turn: _Turn) -> str | None:
        sub = self._subflows.get(node.flow)
        if sub is None or len(self._stack) > MAX_SUBFLOW_DEPTH:
            if (node.id, "error") in self._graph.edges:
                return self._target(node, "error", turn)
            self._finish(Hangup("subflow_missing", node.id), turn)
            return None
        graph = self._subgraphs.get(node.flow)
        if graph is None:
            graph = self._subgraphs[node.flow] = _Graph.build(sub, None)
        self._stack.append(_Frame(graph, node.id))
        return graph.start

    def _target(self, node: FlowNode, port: str, turn: _Turn) -> str | None:
        """The node behind ``port``; a dangling port ends the (sub)flow."""
        target = self._graph.edges.get((node.id, port))
        if target is not None:
            return target
        if len(self._stack) > 1:
            caller = self._stack.pop().caller
            assert caller is not None  # only the main frame has no caller
            return self._target(self._graph.nodes[caller], "next", turn)
        self._finish(Hangup("end_of_flow", node.id), turn)
        return None

    def _follow(self, node: FlowNode, port: str, turn: _Turn) -> None:
        target = self._target(node, port, turn)
        if target is not None:
            self._run(target, turn)

    def _finish(self, action: Transfer | Hangup, turn: _Turn) -> None:
        turn.actions.append(action)
        self._state = State.FINISHED
        self._no_input_deadline = self._digit_deadline = self._pending_deadline = None
        self._pending_request = None

    def _wait(self, deadline: float) -> str:
        self._request_seq += 1
        request_id = f"{self._graph.flow.id}:{self._request_seq}"
        self._pending_request = request_id
        self._pending_deadline = deadline
        self._state = State.WAITING
        return request_id

    # --- listening -----------------------------------------------------------------

    def _listen(self, node: AskNode | IntentNode, turn: _Turn) -> None:
        self._state = State.LISTENING
        self._digits = ""
        self._digit_deadline = None
        if isinstance(node, AskNode):
            turn.actions.append(Listen(node.id, node.slot, self._kind(node)))
        else:
            turn.actions.append(Listen(node.id, None, "intent"))
        # Nothing to play: the caller's silence starts counting at once.
        self._no_input_deadline = None if turn.spoke else turn.now + self._no_input_timeout

    def _kind(self, node: AskNode) -> str:
        return node.kind or self._graph.slot_kinds.get(node.slot, "free_text")

    def _retries(self, node: AskNode | IntentNode) -> int:
        return self._max_retries if node.max_retries is None else node.max_retries

    def _answer_ask(self, node: AskNode, text: str, turn: _Turn) -> None:
        if self._global_route(node, text, turn):
            return
        parsed = parse_slot(self._kind(node), text, self._today)
        if parsed is None:
            self._no_match_retry(node, turn)
            return
        self._set_slot(node.slot, parsed.value, node.id, turn)
        self._follow(node, "filled", turn)

    def _fill_from_dtmf(self, node: AskNode, digits: str, turn: _Turn) -> None:
        self._digit_deadline = None
        self._digits = ""
        parsed = parse_dtmf(self._kind(node), digits)
        if parsed is None:
            self._no_match_retry(node, turn)
            return
        self._set_slot(node.slot, parsed.value, node.id, turn)
        self._follow(node, "filled", turn)

    def _answer_intent(self, node: IntentNode, text: str, turn: _Turn) -> None:
        prediction = self._graph.classifier.classify(text, threshold=node.threshold)
        if prediction.intent is None:
            if (node.id, "fallback") in self._graph.edges:
                self._follow(node, "fallback", turn)
            else:
                self._no_match_retry(node, turn)
            return
        self._route_intent(node, prediction.intent, prediction.confidence, turn, text)

    def _route_intent(
        self, node: IntentNode, name: str, confidence: float, turn: _Turn, text: str = ""
    ) -> None:
        turn.actions.append(IntentMatched(name, confidence, node.id))
        self._last_intent = name
        if text:
            self._prefill(name, text, node.id, turn)
        if (node.id, name) in self._graph.edges:
            self._follow(node, name, turn)
        elif name in self._graph.globals:
            self._run(self._graph.globals[name], turn)
        else:
            self._follow(node, "fallback", turn)

    def _prefill(self, intent_name: str, text: str, node_id: str, turn: _Turn) -> None:
        """Fill the intent's slots that the same utterance already states."""
        for intent in self._graph.flow.intents:
            if intent.name != intent_name:
                continue
            for slot in intent.slots:
                parsed = extract_slot(self._graph.slot_kinds.get(slot, ""), text, self._today)
                if parsed is not None:
                    self._set_slot(slot, parsed.value, node_id, turn)

    def _global_route(self, node: AskNode, text: str, turn: _Turn) -> bool:
        if not self._graph.globals:
            return False
        prediction = self._graph.classifier.classify(text, threshold=GLOBAL_INTENT_THRESHOLD)
        if prediction.intent is None or prediction.intent not in self._graph.globals:
            return False
        turn.actions.append(IntentMatched(prediction.intent, prediction.confidence, node.id))
        self._last_intent = prediction.intent
        self._run(self._graph.globals[prediction.intent], turn)
        return True

    def _no_match_retry(self, node: AskNode | IntentNode, turn: _Turn) -> None:
        self._no_match += 1
        if self._no_match > self._retries(node):
            if isinstance(node, AskNode):
                self._follow(node, "no_match", turn)
            else:
                self._finish(Hangup("no_match", node.id), turn)
            return
        if node.reprompt:
            self._prompt = [self._say(node.reprompt, node.id, turn, barge_in=node.barge_in)]
        else:
            self._say(DEFAULT_NO_MATCH_TEXT, node.id, turn, barge_in=node.barge_in)
            self._prompt = (
                [self._say(node.text, node.id, turn, barge_in=node.barge_in)] if node.text else []
            )
        self._listen(node, turn)

    def _no_input_timeout_reached(self, turn: _Turn) -> None:
        node = self._graph.nodes[self._node_id]
        if not isinstance(node, AskNode | IntentNode):
            return
        self._no_input += 1
        if self._no_input > self._retries(node):
            if isinstance(node, AskNode):
                self._follow(node, "no_input", turn)
            else:
                self._finish(Hangup("no_input", node.id), turn)
            return
        self._say(
            node.no_input_text or DEFAULT_NO_INPUT_TEXT, node.id, turn, barge_in=node.barge_in
        )
        if node.text:
            self._say(node.text, node.id, turn, barge_in=node.barge_in)
        self._listen(node, turn)

    def _repeat_prompt(self, node: FlowNode, turn: _Turn) -> None:
        for say in self._last_spoken or self._prompt:
            turn.actions.append(say)
            turn.spoke = True
            self._remember("assistant", say.text)
        if isinstance(node, AskNode | IntentNode):
            self._listen(node, turn)

    # --- values ----------------------------------------------------------------------

    def _set_slot(self, slot: str, value: Any, node_id: str, turn: _Turn) -> None:
        self._slots[slot] = value
        turn.actions.append(SlotFilled(slot, value, node_id))

    def _apply_webhook_data(self, node: WebhookNode, data: dict[str, Any], turn: _Turn) -> None:
        if node.result_slot:
            self._set_slot(node.result_slot, data, node.id, turn)
        slots = data.get("slots")
        if isinstance(slots, dict):
            for name, value in slots.items():
                if isinstance(name, str) and isinstance(value, str | int | float | bool | None):
                    self._set_slot(name, value, node.id, turn)
        say = data.get("say")
        if isinstance(say, str) and say.strip():
            self._say(say, node.id, turn, external=True)

    def _scope(self) -> dict[str, object]:
        scope: dict[str, object] = {f"var.{k}": v for k, v in self._variables.items()}
        scope.update(self._variables)
        scope.update(self._slots)
        scope["last_utterance"] = self._last_utterance
        scope["intent"] = self._last_intent
        return scope

    def _render(self, text: str) -> str:
        values = dict(self._variables)
        for name, value in self._slots.items():
            values[name] = spoken(self._graph.slot_kinds.get(name, ""), value)
        values["last_utterance"] = self._last_utterance
        values["intent"] = self._last_intent
        return render(text, values)

    def _say(
        self,
        text: str,
        node_id: str,
        turn: _Turn,
        *,
        barge_in: bool = True,
        external: bool = False,
    ) -> Say:
        """Speak a flow text (rendered when it has placeholders) or, with ``external``,
        text from an LLM/knowledge/webhook answer, which is never treated as a template."""
        if external:
            say = Say(text, False, barge_in, node_id)
        elif is_static(text):
            say = Say(text, True, barge_in, node_id)
        else:
            say = Say(self._render(text), False, barge_in, node_id)
        turn.actions.append(say)
        turn.spoke = True
        if self._speaking_turn is not turn:
            self._speaking_turn, self._last_spoken = turn, []
        self._last_spoken.append(say)
        self._remember("assistant", say.text)
        return say

    def _remember(self, role: str, text: str) -> None:
        if self._history and self._history[-1]["role"] == role == "assistant":
            self._history[-1] = {"role": role, "content": f"{self._history[-1]['content']} {text}"}
        else:
            self._history.append({"role": role, "content": text})
        del self._history[:-MAX_HISTORY]

    def _llm_messages(self, node: LlmNode) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        if node.system:
            messages.append({"role": "system", "content": self._render(node.system)})
        if node.history:
            history = list(self._history)
            if history and history[-1] == {"role": "user", "content": self._last_utterance}:
                history.pop()  # the prompt below carries the latest utterance
            messages.extend(history)
        messages.append({"role": "user", "content": self._render(node.prompt)})
        return messages

    @staticmethod
    def _llm_options(node: LlmNode) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": node.timeout}
        if node.temperature is not None:
            options["temperature"] = node.temperature
        if node.max_tokens is not None:
            options["max_tokens"] = node.max_tokens
        return options


_STOPWORD_TEXT = (
    "a an the i i'd i'm i'll you your we our to of for on in at is are am be can could "
    "would will do does did it it's that this me my and or but with please what when "
    "how like want need some any there here just"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
