"""CallSideWork against local fakes: an OpenAI-compatible chat-completions endpoint that
streams server-sent events, and a webhook receiver that checks the signature."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from voxgate.agents import ipc
from voxgate.agents.flow_engine import (
    CallLlm,
    CallWebhook,
    ExternalResult,
    QueryKnowledge,
    Say,
)
from voxgate.agents.side_work import KNOWLEDGE_UNAVAILABLE, CallSideWork, SideWorkHttp
from voxgate.agents.webhook_client import SIGNATURE_HEADER, verify_signature

API_KEY = "sk-test-4d1f0a9b7c"
SIGNING_KEY = "whsec-5e2c7a1d"
MAX_REQUEST = 1 << 20


@dataclass
class Gate:
    """A point in a fake's script where it waits until the test opens it."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.event.set()


class FakeChatCompletions:
    """FAKE of an OpenAI-compatible ``POST {base}/chat/completions`` with ``stream: true``.

    It answers the documented shape: ``200`` with ``Content-Type: text/event-stream``,
    one ``data: {"choices": [{"delta": {"content": ...}}]}`` event per piece, then
    ``data: [DONE]``. Written on plain asyncio streams (HTTP/1.1, body ends when the
    connection closes) so the test can see exactly when the client goes away.
    ``script`` items: a text piece, a :class:`Gate` to wait on, or ``"hang"``.
    """

    def __init__(self) -> None:
        self.script: list[str | Gate] = []
        self.status = 200
        self.error_body = ""
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.paths: list[str] = []
        self.streaming = asyncio.Event()  # answered 200 and started the stream
        self.finished = asyncio.Event()  # wrote [DONE]
        self.disconnected = asyncio.Event()  # the client closed the connection early
        self._server: asyncio.Server | None = None
        self._hang = asyncio.Event()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        self._hang.set()
        if self._server is not None:
            self._server.close()

    def secret(self) -> dict[str, str]:
        return {"base_url": self.base_url, "api_key": API_KEY, "model": "fake-model"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.paths.append(lines[0].split(" ")[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            length = min(int(headers.get("content-length", "0")), MAX_REQUEST)
            self.requests.append(json.loads(await reader.readexactly(length)))
            self.auth.append(headers.get("authorization", ""))
            if self.status != 200:
                body = self.error_body.encode()
                writer.write(
                    f"HTTP/1.1 {self.status} Error\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            watch = asyncio.get_running_loop().create_task(self._watch(reader))
            self.streaming.set()
            writer.write(b": keep-alive\n\n")
            self._event(writer, {"role": "assistant"})
            for item in self.script:
                await writer.drain()
                if isinstance(item, Gate):
                    await item.event.wait()
                elif item == "hang":
                    await self._hang.wait()
                else:
                    self._event(writer, {"content": item})
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()
            self.finished.set()
            watch.cancel()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _event(writer: asyncio.StreamWriter, delta: dict[str, str]) -> None:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        writer.write(f"data: {json.dumps(chunk)}\n\n".encode())

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        # The client sends nothing after its request: EOF means it hung up.
        if not await reader.read(1):
            self.disconnected.set()


class FakeWebhookReceiver:
    """A tenant's webhook endpoint: checks the signature, answers per ``mode``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.bodies: list[dict[str, Any]] = []
        self.signatures_ok: list[bool] = []
        self.received = asyncio.Event()
        self._never = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        header = request.headers.get(SIGNATURE_HEADER, "")
        self.signatures_ok.append(
            verify_signature(SIGNING_KEY.encode(), raw, header, now=time.time())
        )
        self.bodies.append(json.loads(raw))
        self.received.set()
        if self.mode == "500":
            return web.json_response({"error": "down"}, status=500)
        if self.mode == "hang":
            await self._never.wait()
        return web.json_response({"slots": {"booking_id": "B-17"}, "say": "Booked."})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        self._never.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def llm() -> AsyncIterator[FakeChatCompletions]:
    server = FakeChatCompletions()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def hook() -> AsyncIterator[FakeWebhookReceiver]:
    receiver = FakeWebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def http() -> AsyncIterator[SideWorkHttp]:
    shared = SideWorkHttp(allow_private_webhooks=True)
    yield shared
    await shared.close()


class Recorder:
    """The call's side of the callbacks."""

    def __init__(self) -> None:
        self.said: list[Say] = []
        self.results: asyncio.Queue[tuple[str, ExternalResult]] = asyncio.Queue()
        self.said_event = asyncio.Event()

    def speak(self, say: Say) -> None:
        self.said.append(say)
        self.said_event.set()

    def deliver(self, request_id: str, result: ExternalResult) -> None:
        self.results.put_nowait((request_id, result))

    async def result(self) -> tuple[str, ExternalResult]:
        return await asyncio.wait_for(self.results.get(), 10)


def _work(http: SideWorkHttp, secrets: ipc.CallSecrets) -> tuple[CallSideWork, Recorder]:
    rec = Recorder()
    work = CallSideWork(http, secrets, call_id="c1", speak=rec.speak, deliver=rec.deliver)
    return work, rec


def _llm_call(timeout: float = 10.0) -> CallLlm:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    return CallLlm("f:1", messages, "ai", {"timeout": timeout, "temperature": 0.2})


async def test_llm_sentences_are_spoken_while_the_answer_streams(
    http: SideWorkHttp, llm: FakeChatCompletions
) -> None:
    gate = Gate()
    llm.script = ["Hello there", ", this is the clinic.", " We open", gate, " at nine today."]
    work, rec = _work(http, ipc.CallSecrets(llm=llm.secret()))
    work.start(_llm_call())
    await asyncio.wait_for(rec.said_event.wait(), 10)
    # The first sentence is out while the endpoint is still generating the second.
    assert [s.text for s in rec.said] == ["Hello there, this is the clinic."]
    assert not llm.finished.is_set() and rec.results.empty() and work.streaming
    gate.open()
    request_id, result = await rec.result()
    assert request_id == "f:1"
    assert result == ExternalResult(
        ok=True, text="Hello there, this is the clinic. We open at nine today."
    )
    assert [s.text for s in rec.said][1:] == ["We open at nine today."]
    assert all(s == Say(s.text, False, True, "ai") for s in rec.said)
    request = llm.requests[0]
    assert llm.paths == ["/v1/chat/completions"]
    assert request["stream"] is True and request["model"] == "fake-model"
    assert request["temperature"] == 0.2 and request["messages"][1]["content"] == "Hi"
    assert llm.auth == [f"Bearer {API_KEY}"]
    assert work.pending == 0 and not work.streaming


async def test_llm_timeout_is_an_error_result(http: SideWorkHttp, llm: FakeChatCompletions) -> None:
    llm.script = ["Let me think", "hang"]
    work, rec = _work(http, ipc.CallSecrets(llm=llm.secret()))
    work.start(_llm_call(timeout=0.3))
    _, result = await rec.result()
    assert not result.ok and "within 0.3 s" in result.error
    assert rec.said == []  # an unfinished sentence is not spoken


async def test_llm_http_error_is_redacted(
    http: SideWorkHttp, llm: FakeChatCompletions, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    llm.status = 401
    llm.error_body = json.dumps({"error": {"message": f"Incorrect API key provided: {API_KEY}"}})
    work, rec = _work(http, ipc.CallSecrets(llm=llm.secret()))
    work.start(_llm_call())
    _, result = await rec.result()
    assert not result.ok and "401" in result.error and "***" in result.error
    assert API_KEY not in result.error and API_KEY not in caplog.text
    assert "llm node ai failed" in caplog.text


async def test_llm_without_secret_fails_without_a_request(
    http: SideWorkHttp, llm: FakeChatCompletions
) -> None:
    work, rec = _work(http, ipc.CallSecrets())
    work.start(_llm_call())
    _, result = await rec.result()
    assert not result.ok and "tenant secret 'llm'" in result.error
    bad, rec2 = _work(http, ipc.CallSecrets(llm={"base_url": "ftp://x", "model": "m"}))
    bad.start(_llm_call())
    _, result = await rec2.result()
    assert not result.ok and "base_url" in result.error
    assert llm.requests == []


async def test_barge_in_cancels_the_stream_and_ends_the_node_with_what_was_said(
    http: SideWorkHttp, llm: FakeChatCompletions
) -> None:
    gate = Gate()
    # A sentence is complete once the next one starts (the splitter needs the space).
    llm.script = ["First sentence is here.", " Second", gate, " sentence never heard."]
    work, rec = _work(http, ipc.CallSecrets(llm=llm.secret()))
    work.start(_llm_call())
    await asyncio.wait_for(rec.said_event.wait(), 10)
    work.interrupt()
    request_id, result = rec.results.get_nowait()  # delivered at once, not after the stream
    assert request_id == "f:1" and result.ok and result.text == "First sentence is here."
    assert result.data == {"interrupted": True}
    await asyncio.wait_for(llm.disconnected.wait(), 10)  # the endpoint stops generating
    gate.open()
    await asyncio.sleep(0)
    assert work.pending == 0 and rec.results.empty()
    assert [s.text for s in rec.said] == ["First sentence is here."]
    assert not llm.finished.is_set()


async def test_close_cancels_everything_and_delivers_nothing(
    http: SideWorkHttp, llm: FakeChatCompletions, hook: FakeWebhookReceiver
) -> None:
    llm.script = ["hang"]
    hook.mode = "hang"
    work, rec = _work(http, ipc.CallSecrets(llm=llm.secret(), webhook={"secret": SIGNING_KEY}))
    work.start(_llm_call())
    work.start(CallWebhook("f:2", hook.url, {"slots": {}}, 10.0, "hook"))
    assert work.pending == 2
    await asyncio.wait_for(llm.streaming.wait(), 10)
    await asyncio.wait_for(hook.received.wait(), 10)
    await work.close()
    await asyncio.wait_for(llm.disconnected.wait(), 10)
    assert work.pending == 0 and rec.results.empty()
    work.start(QueryKnowledge("f:3", "q", "kb"))  # after close: ignored
    assert rec.results.empty()


async def test_webhook_is_signed_and_its_answer_delivered(
    http: SideWorkHttp, hook: FakeWebhookReceiver
) -> None:
    work, rec = _work(http, ipc.CallSecrets(webhook={"secret": SIGNING_KEY}))
    body = {"flow_id": "f", "node_id": "hook", "slots": {"date": "2025-06-01"}}
    work.start(CallWebhook("f:2", hook.url, body, 5.0, "hook"))
    request_id, result = await rec.result()
    assert request_id == "f:2" and result.ok
    assert result.data == {"slots": {"booking_id": "B-17"}, "say": "Booked."}
    assert hook.bodies == [body] and hook.signatures_ok == [True]


async def test_webhook_error_and_timeout(http: SideWorkHttp, hook: FakeWebhookReceiver) -> None:
    work, rec = _work(http, ipc.CallSecrets(webhook={"secret": SIGNING_KEY}))
    hook.mode = "500"
    work.start(CallWebhook("f:2", hook.url, {}, 5.0, "hook"))
    _, result = await rec.result()
    assert not result.ok and "500" in result.error
    hook.mode = "hang"
    work.start(CallWebhook("f:3", hook.url, {}, 0.3, "hook"))
    request_id, result = await rec.result()
    assert request_id == "f:3" and not result.ok and "within 0.3 s" in result.error


async def test_webhook_without_signing_key_is_not_sent(
    http: SideWorkHttp, hook: FakeWebhookReceiver
) -> None:
    work, rec = _work(http, ipc.CallSecrets(webhook={"secret": ""}))
    work.start(CallWebhook("f:2", hook.url, {}, 5.0, "hook"))
    _, result = await rec.result()
    assert not result.ok and "tenant secret 'webhook'" in result.error
    assert hook.bodies == []


async def test_private_webhook_addresses_are_refused_by_default(
    hook: FakeWebhookReceiver,
) -> None:
    strict = SideWorkHttp()
    assert strict.allow_private_webhooks is False
    try:
        work, rec = _work(strict, ipc.CallSecrets(webhook={"secret": SIGNING_KEY}))
        work.start(CallWebhook("f:2", hook.url, {}, 5.0, "hook"))
        _, result = await rec.result()
        assert not result.ok and "private address" in result.error
        assert hook.bodies == []
    finally:
        await strict.close()


async def test_knowledge_is_not_found_and_says_why(http: SideWorkHttp) -> None:
    work, rec = _work(http, ipc.CallSecrets())
    work.start(QueryKnowledge("f:4", "parking?", "kb"))
    request_id, result = rec.results.get_nowait()
    assert request_id == "f:4" and not result.ok
    assert result.data == KNOWLEDGE_UNAVAILABLE == {"knowledge": "unavailable"}


async def test_one_session_per_worker(http: SideWorkHttp) -> None:
    first = http.session()
    assert http.session() is first
    await http.close()
    assert first.closed and http.session() is not first
