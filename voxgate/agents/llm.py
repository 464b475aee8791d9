"""OpenAI-compatible chat completions client (streaming) and a sentence splitter.

Any endpoint that speaks the ``POST {base_url}/chat/completions`` shape with
``"stream": true`` (server-sent events of ``data: {json}`` lines ending with
``data: [DONE]``) works: OpenAI, vLLM, llama.cpp server, Ollama, LiteLLM...
The tenant configures it with the secret ``llm`` =
``{"base_url", "api_key", "model"}``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

MAX_LINE_BYTES = 1 << 20


class LlmError(Exception):
    """Base class: the LLM call failed."""


class LlmConfigError(LlmError):
    """The tenant's ``llm`` secret is missing fields or malformed."""


class LlmTimeoutError(LlmError):
    """No complete answer within the timeout."""


class LlmHttpError(LlmError):
    """The endpoint answered with a non-2xx status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"LLM endpoint returned {status}: {message}")
        self.status = status


class LlmProtocolError(LlmError):
    """The endpoint's stream did not have the OpenAI shape."""


class LlmConfig(msgspec.Struct, frozen=True):
    base_url: str
    model: str
    api_key: str = ""

    def __repr__(self) -> str:  # the key must never reach a log
        return f"LlmConfig(base_url={self.base_url!r}, model={self.model!r}, api_key=***)"

    __str__ = __repr__

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any]) -> LlmConfig:
        """Build from the tenant secret ``llm``; raises :class:`LlmConfigError`."""
        base_url = secret.get("base_url")
        model = secret.get("model")
        api_key = secret.get("api_key", "")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise LlmConfigError("secret 'llm' needs base_url (http or https)")
        if not isinstance(model, str) or not model:
            raise LlmConfigError("secret 'llm' needs model")
        if not isinstance(api_key, str):
            raise LlmConfigError("secret 'llm' api_key must be a string")
        return cls(base_url=base_url.rstrip("/"), model=model, api_key=api_key)


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = []
    error: dict[str, Any] | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class LlmClient:
    """Streams chat completions from one configured endpoint."""

    def __init__(
        self, config: LlmConfig, session: aiohttp.ClientSession, *, timeout: float = 30.0
    ) -> None:
        self._config = config
        self._session = session
        self._timeout = timeout

    async def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        time_limit: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield the reply's text pieces as they arrive."""
        body: dict[str, Any] = {"model": self._config.model, "messages": messages, "stream": True}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._config.api_key:
            headers["Authorization"] = f"Bearer {self._config.api_key}"
        url = f"{self._config.base_url}/chat/completions"
        limit = self._timeout if time_limit is None else time_limit
        try:
            async with asyncio.timeout(limit):
                async with self._session.post(
                    url, data=msgspec.json.encode(body), headers=headers, allow_redirects=False
                ) as response:
                    if response.status // 100 != 2:
                        text = (await response.content.read(2000)).decode("utf-8", "replace")
                        raise LlmHttpError(response.status, text.strip()[:300])
                    async for piece in _sse_deltas(response.content):
                        yield piece
        except TimeoutError:
            raise LlmTimeoutError(f"no complete answer within {limit:g} s") from None
        except aiohttp.ClientError as exc:
            raise LlmError(f"LLM request failed: {type(exc).__name__}: {exc}") from None

    async def complete(self, messages: list[dict[str, str]], **options: Any) -> str:
        """The whole reply as one string."""
        return "".join([piece async for piece in self.stream_chat(messages, **options)])


async def _sse_deltas(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    done = False
    while not done:
        try:
            raw = await content.readline()
        except ValueError:
            raise LlmProtocolError("event line too long") from None
        if not raw:
            break  # end of body without [DONE]: accept what came (some servers omit it)
        if len(raw) > MAX_LINE_BYTES:
            raise LlmProtocolError("event line too long")
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue  # comments (":"), event:/id: fields, blank separators
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            continue
        try:
            chunk = _chunk_decoder.decode(payload)
        except msgspec.DecodeError:
            raise LlmProtocolError(f"bad event payload: {payload[:100]!r}") from None
        if chunk.error is not None:
            raise LlmProtocolError(f"endpoint error: {str(chunk.error.get('message', ''))[:200]}")
        for choice in chunk.choices:
            if choice.delta.content:
                yield choice.delta.content


_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "approx", "no"]
)
_BOUNDARY_RE = re.compile(r"([.!?]+[\"')\]]*)(\s+)|(\n+)")


class SentenceSplitter:
    """Cuts streamed text into sentences so speech synthesis can start early.

    Short fragments are held back (``min_chars``) so "Sure." is not spoken as a
    clip of its own, and very long runs are cut at a comma (``max_chars``).
    """

    def __init__(self, *, min_chars: int = 12, max_chars: int = 240) -> None:
        self._buffer = ""
        self._min = min_chars
        self._max = max_chars

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        start = 0
        for m in _BOUNDARY_RE.finditer(self._buffer):
            end = m.end(1) if m.group(1) else m.start(3)
            candidate = self._buffer[start:end].strip()
            if m.group(1):
                last_word = re.findall(r"[\w.]+$", self._buffer[start : m.start(1)])
                if last_word and last_word[0].lower() in _ABBREVIATIONS:
                    continue
            if len(candidate) < self._min and not m.group(3):
                continue
            if candidate:
                out.append(candidate)
            start = m.end()
        self._buffer = self._buffer[start:]
        if len(self._buffer) > self._max:
            cut = self._buffer.rfind(",", 0, self._max)
            cut = cut + 1 if cut > 0 else self._max
            out.append(self._buffer[:cut].strip())
            self._buffer = self._buffer[cut:]
        return out

    def flush(self) -> str | None:
        rest = self._buffer.strip()
        self._buffer = ""
        return rest or None
