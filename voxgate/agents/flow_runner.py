"""Async wrapper that runs a :class:`FlowEngine` for one call or preview session.

The runner feeds the engine with the loop's time, owns its timer, and carries
out the side work the engine asks for: LLM replies (streamed and spoken
sentence by sentence as ``Say(static=False)``), signed webhooks, and knowledge
look-ups. Everything the owner must act on (``Say``, ``Listen``, ``Transfer``,
``Hangup``, and the informational ``IntentMatched``/``SlotFilled``/
:class:`ExternalDone`) comes out of ``async for event in runner``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import msgspec

from voxgate.agents.flow_engine import (
    Action,
    CallLlm,
    CallWebhook,
    ExternalResult,
    FlowEngine,
    QueryKnowledge,
    Say,
)
from voxgate.agents.llm import LlmClient, LlmError, SentenceSplitter
from voxgate.agents.webhook_client import WebhookClient, WebhookError

KnowledgeLookup = Callable[[str], Awaitable[ExternalResult]]


class ExternalDone(msgspec.Struct, frozen=True, tag="external_done", tag_field="type"):
    """Informational: a request finished (for transcripts, previews and metrics)."""

    request_id: str
    node_id: str
    kind: str  # "llm" | "webhook" | "knowledge"
    ok: bool
    error: str = ""
    metadata: dict[str, Any] = {}


class _Closed(msgspec.Struct, frozen=True):
    pass


RunnerEvent = Action | ExternalDone


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """The clock and timer the runner uses; an event loop fits, tests pass a fake."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class _LoopScheduler:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def time(self) -> float:
        return self._loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_at(when, callback)


async def knowledge_unavailable(query: str) -> ExternalResult:
    """Default look-up until knowledge bases exist: always ``not_found``, and says why."""
    return ExternalResult(
        ok=False, data={"knowledge": "unavailable"}, error="knowledge unavailable"
    )


class FlowRunner:
    """Runs one conversation; see the module docstring."""

    def __init__(
        self,
        engine: FlowEngine,
        *,
        llm: LlmClient | None = None,
        webhooks: WebhookClient | None = None,
        knowledge: KnowledgeLookup = knowledge_unavailable,
        scheduler: Scheduler | None = None,
        splitter: Callable[[], SentenceSplitter] = SentenceSplitter,
    ) -> None:
        self._engine = engine
        self._llm = llm
        self._webhooks = webhooks
        self._knowledge = knowledge
        self._scheduler = scheduler
        self._splitter = splitter
        # Bounded by construction: the engine emits at most a few dozen actions per event.
        self._out: asyncio.Queue[RunnerEvent | _Closed] = asyncio.Queue()
        self._timer: TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def engine(self) -> FlowEngine:
        return self._engine

    def _sched(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = _LoopScheduler(asyncio.get_running_loop())
        return self._scheduler

    # --- events from the owner -------------------------------------------------------

    def start(self) -> None:
        self._apply(self._engine.start(self._sched().time()))

    def on_utterance(self, text: str) -> None:
        self._apply(self._engine.on_utterance(text, self._sched().time()))

    def on_dtmf(self, digit: str) -> None:
        self._apply(self._engine.on_dtmf(digit, self._sched().time()))

    def on_prompt_played(self) -> None:
        self._apply(self._engine.on_prompt_played(self._sched().time()))

    async def close(self) -> None:
        """Stop timers and side work; the iterator ends."""
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._out.put_nowait(_Closed())

    def __aiter__(self) -> AsyncIterator[RunnerEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunnerEvent]:
        while True:
            item = await self._out.get()
            if isinstance(item, _Closed):
                return
            yield item

    # --- plumbing ----------------------------------------------------------------------

    def _emit(self, event: RunnerEvent) -> None:
        if not self._closed:
            self._out.put_nowait(event)

    def _apply(self, actions: list[Action]) -> None:
        if self._closed:
            return
        for action in actions:
            if isinstance(action, CallLlm):
                self._spawn(self._run_llm(action))
            elif isinstance(action, CallWebhook):
                self._spawn(self._run_webhook(action))
            elif isinstance(action, QueryKnowledge):
                self._spawn(self._run_knowledge(action))
            else:
                self._emit(action)
        self._rearm()
        if self._engine.finished:
            self._finish()

    def _finish(self) -> None:
        """The conversation is over: drop stale side work; the iterator ends after the
        last queued action."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._closed = True
        self._cancel_timer()
        self._out.put_nowait(_Closed())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _rearm(self) -> None:
        deadline = self._engine.next_timeout()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None and not self._closed:
            self._timer_at = deadline
            self._timer = self._sched().call_at(deadline, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._apply(self._engine.on_timer(self._sched().time()))

    def _result(self, request_id: str, result: ExternalResult) -> None:
        self._apply(self._engine.on_result(request_id, result, self._sched().time()))

    # --- side work ----------------------------------------------------------------------

    async def _run_llm(self, call: CallLlm) -> None:
        if self._llm is None:
            result = ExternalResult(ok=False, error="no LLM configured (tenant secret 'llm')")
        else:
            splitter = self._splitter()
            parts: list[str] = []
            try:
                async for piece in self._llm.stream_chat(
                    call.messages,
                    temperature=call.options.get("temperature"),
                    max_tokens=call.options.get("max_tokens"),
                    time_limit=call.options.get("timeout"),
                ):
                    parts.append(piece)
                    for sentence in splitter.feed(piece):
                        self._emit(Say(sentence, False, True, call.node_id))
                rest = splitter.flush()
                if rest:
                    self._emit(Say(rest, False, True, call.node_id))
                result = ExternalResult(ok=True, text="".join(parts).strip())
            except LlmError as exc:
                result = ExternalResult(ok=False, text="".join(parts).strip(), error=str(exc))
        self._emit(ExternalDone(call.request_id, call.node_id, "llm", result.ok, result.error))
        self._result(call.request_id, result)

    async def _run_webhook(self, call: CallWebhook) -> None:
        if self._webhooks is None:
            result = ExternalResult(ok=False, error="webhooks are not configured")
        else:
            try:
                data = await self._webhooks.post(call.url, call.body, time_limit=call.timeout)
                result = ExternalResult(ok=True, data=data)
            except WebhookError as exc:
                result = ExternalResult(ok=False, error=str(exc))
        self._emit(ExternalDone(call.request_id, call.node_id, "webhook", result.ok, result.error))
        self._result(call.request_id, result)

    async def _run_knowledge(self, query: QueryKnowledge) -> None:
        result = await self._knowledge(query.query)
        self._emit(
            ExternalDone(
                query.request_id, query.node_id, "knowledge", result.ok, result.error, result.data
            )
        )
        self._result(query.request_id, result)
