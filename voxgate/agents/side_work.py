"""A call's side work inside a speech worker: LLM replies, signed webhooks, knowledge.

The flow engine asks for it with ``CallLlm``, ``CallWebhook`` and
``QueryKnowledge`` and waits for an :class:`~voxgate.agents.flow_engine.ExternalResult`.
:class:`CallSideWork` carries each request out for one call:

- ``CallLlm`` streams a chat completion from the tenant's OpenAI-compatible
  endpoint (tenant secret ``llm`` = ``{"base_url", "api_key", "model"}``). Every
  complete sentence is handed to ``speak`` as ``Say(static=False)`` the moment the
  :class:`~voxgate.agents.llm.SentenceSplitter` cuts it, so the caller hears the
  first sentence while the rest is still being generated. The node's ``timeout``
  bounds the whole answer; a timeout or failure takes the node's ``error`` port.
  When the caller barges in, the stream is cancelled and the node finishes with
  what was said so far (``ok``, ``data={"interrupted": True}``): the caller chose
  to speak, which is not an error.
- ``CallWebhook`` POSTs the body signed with the tenant secret ``webhook`` =
  ``{"secret": "<signing key>"}`` (header ``X-Voxgate-Signature``, see
  :mod:`voxgate.agents.webhook_client`). Without that secret nothing is sent and
  the node takes its ``error`` port: an unsigned body would let anyone forge
  results for the tenant's endpoint. The node's ``timeout`` applies.
- ``QueryKnowledge`` answers ``not_found`` at once with
  ``data={"knowledge": "unavailable"}`` until knowledge bases exist.

:class:`SideWorkHttp` is the worker's one HTTP client session (made on first use,
so a worker whose flows never call out holds no sockets) and its address policy:
webhooks to loopback/private addresses are refused unless the worker runs with
``allow_private_webhooks`` (``--webhook-allow-private``), which is meant for
tests and single-host deployments whose webhook receivers sit next to voxgate.

Secret values never reach a log: error texts are passed through :meth:`_redact`
before they are logged or put in a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from voxgate.agents import ipc
from voxgate.agents.flow_engine import CallLlm, CallWebhook, ExternalResult, QueryKnowledge, Say
from voxgate.agents.llm import LlmClient, LlmConfig, LlmError, SentenceSplitter
from voxgate.agents.webhook_client import WebhookClient, WebhookError

__all__ = [
    "KNOWLEDGE_UNAVAILABLE",
    "LLM_SECRET",
    "WEBHOOK_SECRET",
    "CallSideWork",
    "SideWorkHttp",
    "SideWorkRequest",
]

log = logging.getLogger(__name__)

LLM_SECRET = "llm"
"""Tenant secret of the LLM endpoint: ``{"base_url", "api_key", "model"}``."""
WEBHOOK_SECRET = "webhook"
"""Tenant secret that signs webhook bodies: ``{"secret": "<signing key>"}``."""
KNOWLEDGE_UNAVAILABLE = {"knowledge": "unavailable"}
"""Metadata of every knowledge answer until knowledge bases exist (said, not silent)."""

CONNECTIONS_PER_HOST = 16
"""Open connections to one LLM/webhook host from one worker (its calls share them)."""

SideWorkRequest = CallLlm | CallWebhook | QueryKnowledge


class SideWorkHttp:
    """The worker's HTTP client session for side work, and its webhook address policy.

    One per worker, shared by its calls, so keep-alive connections to a tenant's
    LLM endpoint are reused from call to call. The session is bound to the event
    loop it was made on; on another loop (a new ``asyncio.run``) a fresh one is made.
    """

    def __init__(self, *, allow_private_webhooks: bool = False) -> None:
        self.allow_private_webhooks = allow_private_webhooks
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session (made now if needed); call it from the worker's loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=CONNECTIONS_PER_HOST),
                # Limits come per request from the flow node (LLM/webhook timeout).
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()


@dataclass
class _LlmRun:
    request: CallLlm
    task: asyncio.Task[None] | None = None
    spoken: list[str] = field(default_factory=list)


class CallSideWork:
    """Carries out one call's side work; see the module docstring.

    ``speak`` receives each streamed LLM sentence; ``deliver`` receives the one
    result of each request (never after :meth:`close`, never twice).
    """

    def __init__(
        self,
        http: SideWorkHttp,
        secrets: ipc.CallSecrets,
        *,
        call_id: str,
        speak: Callable[[Say], None],
        deliver: Callable[[str, ExternalResult], None],
        splitter: Callable[[], SentenceSplitter] = SentenceSplitter,
    ) -> None:
        self._http = http
        self._secrets = secrets
        self._call_id = call_id
        self._speak = speak
        self._deliver = deliver
        self._splitter = splitter
        self._llm_runs: dict[str, _LlmRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests still running."""
        return len(self._tasks)

    @property
    def streaming(self) -> bool:
        """An LLM answer is still being generated."""
        return bool(self._llm_runs)

    def start(self, request: SideWorkRequest) -> None:
        """Begin a request; its result comes through ``deliver`` later (knowledge: now)."""
        if self._closed:
            return
        if isinstance(request, QueryKnowledge):
            self._finish(
                request.request_id,
                request.node_id,
                "knowledge",
                ExternalResult(
                    ok=False, data=dict(KNOWLEDGE_UNAVAILABLE), error="knowledge unavailable"
                ),
            )
        elif isinstance(request, CallLlm):
            run = _LlmRun(request)
            self._llm_runs[request.request_id] = run
            run.task = self._spawn(self._run_llm(run), f"llm-{self._call_id}")
        else:
            self._spawn(self._run_webhook(request), f"webhook-{self._call_id}")

    def interrupt(self) -> None:
        """The caller barged in: stop generating; each LLM node ends with what was said."""
        runs = list(self._llm_runs.values())
        self._llm_runs.clear()
        for run in runs:
            if run.task is not None:
                run.task.cancel()
            text = " ".join(run.spoken)
            self._finish(
                run.request.request_id,
                run.request.node_id,
                "llm",
                ExternalResult(ok=True, text=text, data={"interrupted": True}),
            )

    async def close(self) -> None:
        """The call ended: cancel everything; no result is delivered after this."""
        self._closed = True
        self._llm_runs.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- plumbing -------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _finish(self, request_id: str, node_id: str, kind: str, result: ExternalResult) -> None:
        if self._closed:
            return
        if not result.ok and kind != "knowledge":
            log.info("call %s: %s node %s failed: %s", self._call_id, kind, node_id, result.error)
        self._deliver(request_id, result)

    def _redact(self, text: str) -> str:
        """``text`` without any secret value of this call (error texts may echo them)."""
        for secret in (self._secrets.llm, self._secrets.webhook):
            for key, value in (secret or {}).items():
                if key != "base_url" and key != "model" and len(value) >= 4:
                    text = text.replace(value, "***")
        return text

    # --- LLM -------------------------------------------------------------------------

    async def _run_llm(self, run: _LlmRun) -> None:
        call = run.request
        result = await self._stream_llm(run)
        if self._llm_runs.pop(call.request_id, None) is None:
            return  # interrupted meanwhile: its result went out already
        self._finish(call.request_id, call.node_id, "llm", result)

    async def _stream_llm(self, run: _LlmRun) -> ExternalResult:
        call = run.request
        if self._secrets.llm is None:
            return ExternalResult(
                ok=False, error=f"no LLM configured (tenant secret {LLM_SECRET!r})"
            )
        try:
            config = LlmConfig.from_secret(self._secrets.llm)
        except LlmError as exc:
            return ExternalResult(ok=False, error=str(exc))
        client = LlmClient(config, self._http.session())
        splitter = self._splitter()

        def say(sentence: str) -> None:
            run.spoken.append(sentence)
            self._speak(Say(sentence, False, True, call.node_id))

        try:
            async for piece in client.stream_chat(
                call.messages,
                temperature=call.options.get("temperature"),
                max_tokens=call.options.get("max_tokens"),
                time_limit=call.options.get("timeout"),
            ):
                for sentence in splitter.feed(piece):
                    say(sentence)
            rest = splitter.flush()
            if rest:
                say(rest)
        except LlmError as exc:
            return ExternalResult(ok=False, text=" ".join(run.spoken), error=self._redact(str(exc)))
        return ExternalResult(ok=True, text=" ".join(run.spoken))

    # --- webhooks --------------------------------------------------------------------

    async def _run_webhook(self, call: CallWebhook) -> None:
        result = await self._post_webhook(call)
        self._finish(call.request_id, call.node_id, "webhook", result)

    async def _post_webhook(self, call: CallWebhook) -> ExternalResult:
        key = (self._secrets.webhook or {}).get("secret", "")
        if not key:
            return ExternalResult(
                ok=False, error=f"no webhook signing key (tenant secret {WEBHOOK_SECRET!r})"
            )
        client = WebhookClient(
            self._http.session(), key.encode(), allow_private=self._http.allow_private_webhooks
        )
        try:
            data = await client.post(call.url, call.body, time_limit=call.timeout)
        except WebhookError as exc:
            return ExternalResult(ok=False, error=self._redact(str(exc)))
        return ExternalResult(ok=True, data=data)
