"""A fake voice server for testing the load caller: a test peer only.

It speaks the server side of the Twilio contract (signed voice webhook
answered with TwiML, Media Streams WebSocket) on a loopback port 0, checks the
caller's signature with ``voxgate.media.twilio_signature``, records everything
it receives with arrival times, and answers in one of a few scripted ways
(``mode``). It is deliberately simple; the real server is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loadtest.audio import FRAME_BYTES, SpeechDetector
from voxgate.media.twilio_signature import validate_signature

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://voice.example.com"
TOKEN = "one-time-token-42"


@dataclass
class StreamLog:
    """What one Media Streams connection received, with loop times."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    raw: list[tuple[float, str]] = field(default_factory=list)  # (arrival, text frame)
    audio: bytearray = field(default_factory=bytearray)
    arrivals: list[float] = field(default_factory=list)
    sent_marks: dict[str, float] = field(default_factory=dict)  # name -> when sent
    echoed_marks: dict[str, float] = field(default_factory=dict)  # name -> when echoed
    handshake_signature: str | None = None


class FakeVoiceServer:
    """Scripted server side of a Twilio call, for the caller's tests.

    Modes: ``echo`` (every inbound frame straight back), ``reply`` (after
    200 ms of silence following speech, send the utterance back at once plus
    a mark), ``barge`` (start with 3 s of agent audio and a mark, send
    ``clear`` on the first caller speech), ``greet`` (agent audio and a mark
    first, then as ``reply``), ``close`` (close the socket after a
    few frames), ``busy`` (TwiML without a stream), ``hang`` (never answer
    the webhook).
    """

    def __init__(self, mode: str, agent_audio: bytes = b"") -> None:
        self.mode = mode
        self.agent_audio = agent_audio
        self.webhooks: list[dict[str, str]] = []
        self.signature_ok: list[bool] = []
        self.streams: list[StreamLog] = []
        self.base_url = ""
        self._release = asyncio.Event()
        self._detector = SpeechDetector(-50.0)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/twilio/webhook", self.webhook)
        app.router.add_get("/twilio/media", self.media)
        return app

    async def webhook(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            await self._release.wait()
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.webhooks.append(form)
        ok = validate_signature(
            AUTH_TOKEN,
            PUBLIC_URL + "/twilio/webhook",
            form,
            request.headers.get("X-Twilio-Signature", ""),
        )
        self.signature_ok.append(ok)
        if not ok:
            raise web.HTTPForbidden()
        if self.mode == "busy":
            twiml = "<Response><Say>All lines are busy.</Say><Hangup/></Response>"
        else:
            twiml = (
                '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
                f'<Stream url="wss://voice.example.com/twilio/media">'
                f'<Parameter name="token" value="{TOKEN}"/></Stream></Connect>'
                "<Say>Sorry, something went wrong.</Say><Hangup/></Response>"
            )
        return web.Response(text=twiml, content_type="text/xml")

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        log = StreamLog(handshake_signature=request.headers.get("X-Twilio-Signature"))
        self.streams.append(log)
        loop = asyncio.get_running_loop()
        stream_sid = ""
        utterance = bytearray()
        silent_run = 0
        barged = False
        frames = 0
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            now = loop.time()
            log.raw.append((now, msg.data))
            data = json.loads(msg.data)
            log.messages.append(data)
            event = data["event"]
            if event == "start":
                stream_sid = data["streamSid"]
                if self.mode in ("barge", "greet"):
                    await self._send_audio(ws, stream_sid, self.agent_audio)
                    await self._send_mark(ws, stream_sid, log, "greeting", loop.time())
            elif event == "mark":
                log.echoed_marks[data["mark"]["name"]] = now
            elif event == "stop":
                break
            elif event == "media":
                frame = base64.b64decode(data["media"]["payload"])
                log.audio += frame
                log.arrivals.append(now)
                frames += 1
                speech = self._detector.is_speech(frame)
                if self.mode == "echo":
                    await self._send_audio(ws, stream_sid, frame)
                elif self.mode == "close" and frames == 5:
                    await ws.close()
                    break
                elif self.mode == "barge" and speech and not barged:
                    barged = True
                    await ws.send_json({"event": "clear", "streamSid": stream_sid})
                elif self.mode in ("reply", "greet"):
                    if speech:
                        utterance += frame
                        silent_run = 0
                    elif utterance:
                        silent_run += 1
                        if silent_run == 10:  # 200 ms of silence ends the turn
                            await self._send_audio(ws, stream_sid, bytes(utterance))
                            await self._send_mark(ws, stream_sid, log, "reply", loop.time())
                            utterance.clear()
        return ws

    async def _send_audio(self, ws: web.WebSocketResponse, sid: str, audio: bytes) -> None:
        for i in range(0, len(audio), FRAME_BYTES):
            payload = base64.b64encode(audio[i : i + FRAME_BYTES]).decode()
            await ws.send_json({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def _send_mark(
        self, ws: web.WebSocketResponse, sid: str, log: StreamLog, name: str, now: float
    ) -> None:
        log.sent_marks[name] = now
        await ws.send_json({"event": "mark", "streamSid": sid, "mark": {"name": name}})

    def release(self) -> None:
        self._release.set()


@pytest.fixture
async def fake_server(request: pytest.FixtureRequest) -> AsyncIterator[FakeVoiceServer]:
    marker = request.node.get_closest_marker("fake_mode")
    mode: str = marker.args[0] if marker else "echo"
    agent_audio: bytes = marker.kwargs.get("agent_audio", b"") if marker else b""
    server = FakeVoiceServer(mode, agent_audio)
    runner = web.AppRunner(server.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.release()
        await runner.cleanup()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fake_mode(mode, agent_audio=b''): fake server script")
