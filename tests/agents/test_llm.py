"""OpenAI-compatible streaming client against a local fake of the documented API shape
(POST /v1/chat/completions, stream=true -> text/event-stream of `data: {chunk}` lines,
terminated by `data: [DONE]`), and the sentence splitter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from voxgate.agents.llm import (
    LlmClient,
    LlmConfig,
    LlmConfigError,
    LlmHttpError,
    LlmProtocolError,
    LlmTimeoutError,
    SentenceSplitter,
)


class FakeOpenAI:
    """Fake of the OpenAI chat completions streaming endpoint."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.pieces = ["Hello", " there.", " We open", " at nine", " tomorrow."]
        self.mode = "ok"
        self.never = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.auth.append(request.headers.get("Authorization", ""))
        if self.mode == "401":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.mode == "hang":
            await self.never.wait()
        await response.write(b": keep-alive comment\n\n")
        first = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
        }
        await response.write(f"data: {json.dumps(first)}\n\n".encode())
        for piece in self.pieces:
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if self.mode == "garbage":
            await response.write(b"data: {not json\n\n")
        if self.mode == "error":
            await response.write(b'data: {"error": {"message": "overloaded"}}\n\n')
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeOpenAI, str, aiohttp.ClientSession]]:
    server = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield server, f"http://127.0.0.1:{port}/v1", session
    server.never.set()
    await runner.cleanup()


async def test_streams_pieces(fake: tuple[FakeOpenAI, str, aiohttp.ClientSession]) -> None:
    server, base, session = fake
    config = LlmConfig.from_secret({"base_url": base + "/", "api_key": "sk-test", "model": "m1"})
    client = LlmClient(config, session)
    messages = [{"role": "user", "content": "When do you open?"}]
    pieces = [p async for p in client.stream_chat(messages, temperature=0.2, max_tokens=20)]
    assert pieces == server.pieces
    assert server.requests[0] == {
        "model": "m1",
        "messages": messages,
        "stream": True,
        "temperature": 0.2,
        "max_tokens": 20,
    }
    assert server.auth == ["Bearer sk-test"]
    assert await client.complete(messages) == "Hello there. We open at nine tomorrow."


@pytest.mark.parametrize(
    ("mode", "error"),
    [("401", LlmHttpError), ("garbage", LlmProtocolError), ("error", LlmProtocolError)],
)
async def test_errors_are_typed(
    fake: tuple[FakeOpenAI, str, aiohttp.ClientSession], mode: str, error: type[Exception]
) -> None:
    server, base, session = fake
    server.mode = mode
    client = LlmClient(LlmConfig(base_url=base, model="m"), session)
    with pytest.raises(error):
        await client.complete([{"role": "user", "content": "hi"}])


async def test_timeout(fake: tuple[FakeOpenAI, str, aiohttp.ClientSession]) -> None:
    server, base, session = fake
    server.mode = "hang"
    client = LlmClient(LlmConfig(base_url=base, model="m"), session, timeout=0.2)
    with pytest.raises(LlmTimeoutError):
        await client.complete([{"role": "user", "content": "hi"}])


async def test_connection_refused_is_typed() -> None:
    from voxgate.agents.llm import LlmError

    async with aiohttp.ClientSession() as session:
        # port 9 (discard) on loopback is closed on test machines
        client = LlmClient(LlmConfig(base_url="http://127.0.0.1:9/v1", model="m"), session)
        with pytest.raises(LlmError):
            await client.complete([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "secret",
    [
        {},
        {"base_url": "ftp://x", "model": "m"},
        {"base_url": "http://x"},
        {"base_url": "http://x", "model": "m", "api_key": 5},
    ],
)
def test_bad_config(secret: dict[str, Any]) -> None:
    with pytest.raises(LlmConfigError):
        LlmConfig.from_secret(secret)


def test_config_never_shows_key() -> None:
    config = LlmConfig.from_secret({"base_url": "https://x/v1", "model": "m", "api_key": "sk-s3"})
    assert "sk-s3" not in repr(config) and "sk-s3" not in str(config)


def test_sentence_splitter() -> None:
    splitter = SentenceSplitter()
    out: list[str] = []
    for piece in [
        "Sure. ",
        "Dr. Smith is",
        " in at 9.30 tomorrow",
        ". Would you",
        " like that?",
        " Ok",
    ]:
        out += splitter.feed(piece)
    assert out == ["Sure. Dr. Smith is in at 9.30 tomorrow.", "Would you like that?"]
    assert splitter.flush() == "Ok"
    assert splitter.flush() is None


def test_sentence_splitter_cuts_long_runs() -> None:
    splitter = SentenceSplitter(max_chars=50)
    out = splitter.feed("one two three four five six seven, eight nine ten eleven twelve thirteen")
    assert out == ["one two three four five six seven,"]
    assert splitter.flush() == "eight nine ten eleven twelve thirteen"
    assert SentenceSplitter().feed("A line\nAnother line\n") == ["A line", "Another line"]
