"""FlowRunner: timers through a fake scheduler, LLM and webhook side work against
local fakes of their documented HTTP shapes, knowledge fallback."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from voxgate.agents.flow_engine import (
    ExternalResult,
    FlowEngine,
    Hangup,
    Listen,
    Say,
    SlotFilled,
)
from voxgate.agents.flow_runner import ExternalDone, FlowRunner, RunnerEvent
from voxgate.agents.flowspec import DEFAULT_NO_INPUT_TEXT, parse_flow
from voxgate.agents.intent import IntentClassifier
from voxgate.agents.llm import LlmClient, LlmConfig
from voxgate.agents.templates import get_template
from voxgate.agents.webhook_client import (
    SIGNATURE_HEADER,
    WebhookClient,
    WebhookTargetError,
    sign,
    verify_signature,
)

SECRET = b"whsec-test"


class FakeTimer:
    def __init__(self, owner: FakeScheduler, when: float, callback: Callable[[], None]) -> None:
        self.owner, self.when, self.callback, self.cancelled = owner, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self, when, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[float]:
        return sorted(t.when for t in self.timers if not t.cancelled)

    def advance(self, to: float) -> None:
        self.now = to
        for timer in sorted(self.timers, key=lambda t: t.when):
            if not timer.cancelled and timer.when <= to:
                timer.cancelled = True
                timer.callback()


async def until(
    events: AsyncIterator[RunnerEvent], stop: Callable[[RunnerEvent], bool]
) -> list[RunnerEvent]:
    seen: list[RunnerEvent] = []
    async with asyncio.timeout(10):
        async for event in events:
            seen.append(event)
            if stop(event):
                return seen
    return seen


def is_wait(event: RunnerEvent) -> bool:
    return isinstance(event, Listen | Hangup)


def texts(events: list[RunnerEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, Say)]


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
    return parse_flow(doc)[0]


# Trained once per agent version, outside the event loop, as a worker does.
DEMO = get_template("demo-receptionist").flow
assert DEMO is not None
DEMO_CLASSIFIER = IntentClassifier.from_intents(DEMO.intents)


async def test_demo_with_fake_clock_timers() -> None:
    assert DEMO is not None
    clock = FakeScheduler()
    engine = FlowEngine(DEMO, classifier=DEMO_CLASSIFIER, today=dt.date(2025, 3, 4))
    runner = FlowRunner(engine, scheduler=clock)
    events = aiter(runner)
    runner.start()
    first = await until(events, is_wait)
    assert "How can I help?" in texts(first)[0]
    assert clock.pending() == []
    clock.now = 4.0
    runner.on_prompt_played()
    assert clock.pending() == [10.0]
    clock.advance(10.0)
    reprompt = await until(events, is_wait)
    assert texts(reprompt) == [DEFAULT_NO_INPUT_TEXT]
    clock.now = 12.0
    runner.on_utterance("I'd like to book an appointment for tomorrow at 10 am")
    booked = await until(events, is_wait)
    assert SlotFilled("time", "10:00", "main") in booked
    assert clock.pending() == []  # the old no-input timer was cancelled
    runner.on_dtmf("1")
    await until(events, is_wait)
    runner.on_utterance("Goodbye.")
    end = await until(events, is_wait)
    assert end[-1] == Hangup("flow_hangup", "goodbye")
    assert [e async for e in events] == []  # the iterator ends after the hangup


# --- LLM ------------------------------------------------------------------------------


@pytest.fixture
async def fake_llm() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """Fake of the OpenAI chat completions streaming API (documented SSE shape)."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in ["We are open", " until six today.", " Anything", " else?"]:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1", seen
    await runner.cleanup()


LLM_FLOW = (
    [
        {"id": "i", "type": "intent", "text": "Ask me."},
        {"id": "l", "type": "llm", "system": "Be brief.", "result_slot": "answer"},
        {"id": "bye", "type": "hangup", "text": "LLM failed."},
    ],
    [("start", "next", "i"), ("i", "fallback", "l"), ("l", "next", "i"), ("l", "error", "bye")],
)


async def test_llm_reply_is_spoken_sentence_by_sentence(
    fake_llm: tuple[str, list[dict[str, Any]]],
) -> None:
    base, seen = fake_llm
    async with aiohttp.ClientSession() as session:
        llm = LlmClient(LlmConfig(base_url=base, model="m"), session)
        clock = FakeScheduler()
        runner = FlowRunner(FlowEngine(flow_of(*LLM_FLOW)), llm=llm, scheduler=clock)
        events = aiter(runner)
        runner.start()
        await until(events, is_wait)
        runner.on_utterance("How late are you open?")
        reply = await until(events, is_wait)
        spoken = [e for e in reply if isinstance(e, Say)]
        assert [s.text for s in spoken] == [
            "We are open until six today.",
            "Anything else?",
            "Ask me.",
        ]
        assert [s.static for s in spoken] == [False, False, True]
        assert ExternalDone(reply[2].request_id, "l", "llm", True) in reply  # type: ignore[union-attr]
        assert SlotFilled("answer", "We are open until six today. Anything else?", "l") in reply
        assert seen[0]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert seen[0]["messages"][-1] == {"role": "user", "content": "How late are you open?"}
        await runner.close()


async def test_llm_missing_follows_error_port() -> None:
    runner = FlowRunner(FlowEngine(flow_of(*LLM_FLOW)), scheduler=FakeScheduler())
    events = aiter(runner)
    runner.start()
    await until(events, is_wait)
    runner.on_utterance("anything")
    out = await until(events, is_wait)
    done = [e for e in out if isinstance(e, ExternalDone)]
    assert done and not done[0].ok and "llm" in done[0].error.lower()
    assert texts(out) == ["LLM failed."]


# --- webhooks ---------------------------------------------------------------------------


@pytest.fixture
async def fake_hook() -> AsyncIterator[tuple[str, list[tuple[bytes, str]], asyncio.Event]]:
    """A tenant endpoint: checks the signature, answers JSON; /slow never answers."""
    received: list[tuple[bytes, str]] = []
    never = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get(SIGNATURE_HEADER, "")
        received.append((body, header))
        if not verify_signature(SECRET, body, header, time.time()):
            return web.json_response({"error": "bad signature"}, status=401)
        slots = json.loads(body)["slots"]
        return web.json_response({"slots": {"status": f"order {slots['order']} shipped"}})

    async def slow(request: web.Request) -> web.Response:
        await never.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", handle)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", received, never
    never.set()
    await runner.cleanup()


def hook_flow(url: str, timeout: float = 5.0) -> Any:
    return flow_of(
        [
            {"id": "ask", "type": "ask", "slot": "order", "kind": "digits", "text": "Order?"},
            {"id": "w", "type": "webhook", "url": url, "timeout": timeout},
            {"id": "ok", "type": "hangup", "text": "Your {status}."},
            {"id": "err", "type": "hangup", "text": "Lookup failed."},
        ],
        [
            ("start", "next", "ask"),
            ("ask", "filled", "w"),
            ("w", "success", "ok"),
            ("w", "error", "err"),
        ],
    )


async def test_webhook_signed_call_updates_slots(
    fake_hook: tuple[str, list[tuple[bytes, str]], asyncio.Event],
) -> None:
    base, received, _ = fake_hook
    async with aiohttp.ClientSession() as session:
        hooks = WebhookClient(session, SECRET, allow_private=True)
        runner = FlowRunner(
            FlowEngine(hook_flow(base + "/hook")), webhooks=hooks, scheduler=FakeScheduler()
        )
        events = aiter(runner)
        runner.start()
        await until(events, is_wait)
        runner.on_utterance("My order number is four five seven two.")
        out = await until(events, is_wait)
    assert texts(out) == ["Your order 4572 shipped."]
    body, header = received[0]
    assert json.loads(body)["slots"] == {"order": "4572"}
    assert header.startswith("t=") and ",v1=" in header


async def test_webhook_timeout_takes_error_port(
    fake_hook: tuple[str, list[tuple[bytes, str]], asyncio.Event],
) -> None:
    base, _, _ = fake_hook
    async with aiohttp.ClientSession() as session:
        hooks = WebhookClient(session, SECRET, allow_private=True)
        runner = FlowRunner(
            FlowEngine(hook_flow(base + "/slow", timeout=0.2)),
            webhooks=hooks,
            scheduler=FakeScheduler(),
        )
        events = aiter(runner)
        runner.start()
        await until(events, is_wait)
        runner.on_dtmf("7")
        runner.on_dtmf("#")
        out = await until(events, is_wait)
    done = [e for e in out if isinstance(e, ExternalDone)]
    assert done[0].kind == "webhook" and not done[0].ok and "within" in done[0].error
    assert texts(out) == ["Lookup failed."]


async def test_webhook_client_refuses_private_targets() -> None:
    async with aiohttp.ClientSession() as session:
        hooks = WebhookClient(session, SECRET)
        for url in ["http://127.0.0.1:1/x", "http://[::1]/x", "http://10.0.0.1/", "ftp://x/"]:
            with pytest.raises(WebhookTargetError):
                await hooks.post(url, {}, time_limit=2.0)


def test_signature_round_trip() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    assert verify_signature(SECRET, body, header, 1_700_000_100)
    assert not verify_signature(SECRET, body + b" ", header, 1_700_000_100)
    assert not verify_signature(b"other", body, header, 1_700_000_100)
    assert not verify_signature(SECRET, body, header, 1_700_001_000)  # stale
    assert not verify_signature(SECRET, body, "garbage", 1_700_000_000)


# --- knowledge ---------------------------------------------------------------------------


async def test_knowledge_unavailable_goes_not_found_and_says_why() -> None:
    flow = flow_of(
        [
            {"id": "i", "type": "intent"},
            {"id": "k", "type": "knowledge"},
            {"id": "found", "type": "hangup", "text": "Found."},
            {"id": "nf", "type": "hangup", "text": "Not found."},
        ],
        [
            ("start", "next", "i"),
            ("i", "fallback", "k"),
            ("k", "found", "found"),
            ("k", "not_found", "nf"),
        ],
    )
    runner = FlowRunner(FlowEngine(flow), scheduler=FakeScheduler())
    events = aiter(runner)
    runner.start()
    await until(events, is_wait)
    runner.on_utterance("Do you sell gift cards?")
    out = await until(events, is_wait)
    done = [e for e in out if isinstance(e, ExternalDone)]
    assert done[0].kind == "knowledge" and done[0].metadata == {"knowledge": "unavailable"}
    assert texts(out) == ["Not found."]

    async def lookup(query: str) -> ExternalResult:
        return ExternalResult(ok=True, text=f"About {query}")

    runner = FlowRunner(FlowEngine(flow), knowledge=lookup, scheduler=FakeScheduler())
    events = aiter(runner)
    runner.start()
    await until(events, is_wait)
    runner.on_utterance("gift cards")
    assert texts(await until(events, is_wait)) == ["About gift cards", "Found."]


async def test_real_loop_scheduler_and_close() -> None:
    flow = flow_of(
        [
            {
                "id": "a",
                "type": "ask",
                "slot": "x",
                "kind": "yes_no",
                "text": "Yes?",
                "max_retries": 0,
            },
            {"id": "bye", "type": "hangup"},
        ],
        [("start", "next", "a"), ("a", "no_input", "bye")],
    )
    runner = FlowRunner(FlowEngine(flow, no_input_timeout=0.05))
    events = aiter(runner)
    runner.start()
    await until(events, is_wait)
    runner.on_prompt_played()
    out = await until(events, is_wait)  # the loop's own timer fires the no-input
    assert out[-1] == Hangup("flow_hangup", "bye")
    await runner.close()
    await runner.close()
