"""Twilio contract: signed voice webhook → TwiML, Media Streams with the echo agent,
live call in /system/status and the tenant's analytics feed, call record."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.contract.conftest import Served, assert_error, bearer, call_api, twilio_signature

PUBLIC = "http://voice.example.test"
ACCOUNT_SID = "AC" + "c0ffee" * 5 + "00"
AUTH_TOKEN = "contract-twilio-auth-token"
_numbers = itertools.count(1)
_sids = itertools.count(1)


def call_sid() -> str:
    return f"CA{next(_sids):032x}"


def ulaw_tone(frames: int, freq: float = 440.0) -> list[bytes]:
    """A µ-law sine (G.711 encode written out here, from the standard)."""
    out = bytearray()
    for n in range(frames * 160):
        sample = int(8000 * math.sin(2 * math.pi * freq * n / 8000))
        sign = 0x80 if sample < 0 else 0
        magnitude = min(abs(sample), 32635) + 0x84
        exponent = max(0, magnitude.bit_length() - 8)
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return [bytes(out[i : i + 160]) for i in range(0, len(out), 160)]


@dataclass
class Line:
    """A tenant with a Twilio number routed to an agent."""

    tenant: str
    key: str
    agent: str
    number: str


async def provision(
    session: aiohttp.ClientSession, served: Served, agent_body: dict[str, Any]
) -> Line:
    admin = served.ready["admin_token"]
    http = served.http
    status, created = await call_api(
        session, "POST", http + "/system/tenants", admin, {"name": "Twilio Co"}
    )
    assert status == 201
    tenant, key = created["id"], created["api_key"]
    base = f"{http}/tenants/{tenant}/api"
    status, agent = await call_api(session, "POST", base + "/agents", key, agent_body)
    assert status == 201, agent
    number = f"+1555020{next(_numbers):04d}"
    status, entry = await call_api(
        session, "POST", base + "/numbers", key,
        {"number": number, "provider": "twilio", "agent_id": agent["id"]},
    )  # fmt: skip
    assert status == 201, entry
    status, _ = await call_api(
        session, "PUT", base + "/secrets/twilio", key,
        {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
    )  # fmt: skip
    assert status in (200, 201, 204)
    return Line(tenant, key, agent["id"], number)


def voice_form(line: Line, sid: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15559990000",
        "To": line.number,
        **extra,
    }


async def webhook(
    session: aiohttp.ClientSession,
    served: Served,
    form: dict[str, str],
    signature: str | None,
) -> tuple[int, str, str]:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    async with session.post(served.http + "/twilio/webhook", data=form, headers=headers) as r:
        return r.status, r.content_type, await r.text()


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream url>`` and its ``<Parameter>``s."""
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return stream.attrib["url"], params


async def answered(
    session: aiohttp.ClientSession, served: Served, line: Line, public: str = PUBLIC
) -> tuple[str, str, dict[str, str]]:
    sid = call_sid()
    form = voice_form(line, sid)
    signature = twilio_signature(AUTH_TOKEN, public + "/twilio/webhook", form)
    status, kind, text = await webhook(session, served, form, signature)
    assert status == 200, text
    assert kind in ("text/xml", "application/xml")
    url, params = stream_of(text)
    return sid, url, params


class Stream:
    """The Twilio side of one Media Streams WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        self.ws = ws
        self.call_sid = sid
        self.stream_sid = "MZ" + sid[2:]
        self.seq = 0
        self.chunk = 0

    async def send(self, event: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send_str(json.dumps({**event, "sequenceNumber": str(self.seq)}))

    async def start(self, params: dict[str, str]) -> None:
        await self.ws.send_str(json.dumps({"event": "connected", "protocol": "Call",
                                           "version": "1.0.0"}))  # fmt: skip
        await self.send({
            "event": "start", "streamSid": self.stream_sid,
            "start": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid,
                      "streamSid": self.stream_sid, "tracks": ["inbound"],
                      "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                      "channels": 1}},
        })  # fmt: skip

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        await self.send({
            "event": "media", "streamSid": self.stream_sid,
            "media": {"track": "inbound", "chunk": str(self.chunk),
                      "timestamp": str(self.chunk * 20),
                      "payload": base64.b64encode(payload).decode()},
        })  # fmt: skip

    async def stop(self) -> None:
        stop = {"accountSid": ACCOUNT_SID, "callSid": self.call_sid}
        await self.send({"event": "stop", "streamSid": self.stream_sid, "stop": stop})

    async def receive_media(self, count: int, within: float = 15.0) -> bytes:
        """At least ``count`` outbound media messages; marks are echoed as Twilio does."""
        audio = bytearray()
        got = 0
        async with asyncio.timeout(within):
            while got < count:
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                event = json.loads(message.data)
                assert event["event"] in ("media", "mark", "clear"), event
                assert event["streamSid"] == self.stream_sid
                if event["event"] == "media":
                    audio += base64.b64decode(event["media"]["payload"])
                    got += 1
                elif event["event"] == "mark":
                    await self.send({"event": "mark", "streamSid": self.stream_sid,
                                     "mark": {"name": event["mark"]["name"]}})  # fmt: skip
        return bytes(audio)


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_signed_webhook_answers_connect_stream(
    server: Served, session: aiohttp.ClientSession
) -> None:
    line = await provision(session, server, {"name": "Echo", "template": "echo"})
    form = voice_form(line, call_sid())
    signature = twilio_signature(AUTH_TOKEN, PUBLIC + "/twilio/webhook", form)
    status, kind, first = await webhook(session, server, form, signature)
    assert status == 200 and kind in ("text/xml", "application/xml"), first
    url, params = stream_of(first)
    assert url == "ws://voice.example.test/twilio/media"
    assert params.get("token")
    # Twilio may retry the same CallSid: same answer; another call gets its own token.
    assert (await webhook(session, server, form, signature))[2] == first
    _, _, other = await answered(session, server, line)
    assert other["token"] != params["token"]


async def test_empty_form_fields_are_signed(server: Served, session: aiohttp.ClientSession) -> None:
    line = await provision(session, server, {"name": "Echo", "template": "echo"})
    form = voice_form(line, call_sid(), CallerName="", ForwardedFrom="")
    url = PUBLIC + "/twilio/webhook"
    without_empties = {k: v for k, v in form.items() if v}
    status, _, body = await webhook(
        session, server, form, twilio_signature(AUTH_TOKEN, url, without_empties)
    )
    assert status == 403, body
    status, _, body = await webhook(session, server, form, twilio_signature(AUTH_TOKEN, url, form))
    assert status == 200, body
    stream_of(body)


async def test_bad_or_missing_signature_is_403(
    server: Served, session: aiohttp.ClientSession
) -> None:
    line = await provision(session, server, {"name": "Echo", "template": "echo"})
    form = voice_form(line, call_sid())
    url = PUBLIC + "/twilio/webhook"
    for signature in (
        None,
        "",
        twilio_signature("wrong-token", url, form),
        twilio_signature(AUTH_TOKEN, "http://other.example/twilio/webhook", form),
        twilio_signature(AUTH_TOKEN, url, {**form, "From": "+15550000000"}),
    ):
        status, _, body = await webhook(session, server, form, signature)
        assert status == 403, (signature, body)
        assert "<Connect" not in body
        assert_error(status, json.loads(body), 403)


async def test_media_stream_with_echo_agent(server: Served, session: aiohttp.ClientSession) -> None:
    line = await provision(session, server, {"name": "Echo", "template": "echo"})
    admin = server.ready["admin_token"]
    base = f"/tenants/{line.tenant}/api"
    feed = await session.ws_connect(server.ws + base + "/analytics/ws", headers=bearer(line.key))
    sid, _, params = await answered(session, server, line)
    tone = ulaw_tone(100)
    async with session.ws_connect(server.ws + "/twilio/media") as ws:
        stream = Stream(ws, sid)
        await stream.start(params)
        for frame in tone[:25]:
            await stream.media(frame)
        echoed = await stream.receive_media(10)
        assert len(echoed) >= 10 * 160
        assert len(set(echoed)) > 8, "echo is not the caller's audio"

        status, view = await call_api(session, "GET", server.http + "/system/status", admin)
        assert status == 200
        live = [c for c in view["calls"] if c["id"] == sid]
        assert live, view["calls"]
        assert live[0]["tenant_id"] == line.tenant and live[0]["agent_id"] == line.agent
        assert live[0]["provider"] == "twilio" and live[0]["started_at"] > 0

        await stream.stop()
        async with asyncio.timeout(10):
            while (await ws.receive()).type not in (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
            ):  # fmt: skip
                pass

    # The tenant's live feed saw the call start and end.
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not any(e.get("type") == "call_ended" for e in seen):
            seen.append(json.loads((await feed.receive()).data))
    await feed.close()
    kinds = [(e["type"], e["call_id"]) for e in seen]
    assert ("call_started", sid) in kinds and ("call_ended", sid) in kinds

    # A stream token is good for one stream only.
    async with session.ws_connect(server.ws + "/twilio/media") as ws:
        stream = Stream(ws, sid)
        await stream.start(params)
        async with asyncio.timeout(10):
            message = await ws.receive()
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message

    status, detail = await call_api(session, "GET", server.http + f"{base}/calls/{sid}", line.key)
    assert status == 200, detail
    assert detail["call"]["id"] == sid and "turns" in detail
    status, listing = await call_api(session, "GET", server.http + f"{base}/calls", line.key)
    assert sid in {c["id"] for c in listing["calls"]}


async def test_analytics_feed_sees_only_own_tenant(
    server: Served, session: aiohttp.ClientSession
) -> None:
    mine = await provision(session, server, {"name": "Echo", "template": "echo"})
    theirs = await provision(session, server, {"name": "Echo", "template": "echo"})
    feed = await session.ws_connect(
        server.ws + f"/tenants/{mine.tenant}/api/analytics/ws?access_token={mine.key}"
    )
    sids = []
    for line in (theirs, mine):
        sid, _, params = await answered(session, server, line)
        sids.append(sid)
        async with session.ws_connect(server.ws + "/twilio/media") as ws:
            stream = Stream(ws, sid)
            await stream.start(params)
            await stream.media(ulaw_tone(1)[0])
            await stream.receive_media(1)
            await stream.stop()
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while sum(e.get("type") == "call_ended" for e in events) < 1:
            events.append(json.loads((await feed.receive()).data))
    await feed.close()
    calls = {e["call_id"] for e in events}
    assert sids[1] in calls and sids[0] not in calls


async def test_flow_agent_speaks_first(server: Served, session: aiohttp.ClientSession) -> None:
    """The contract's example flow greets the caller before the caller says anything."""
    from tests.contract.test_http_api import FRONT_DESK

    line = await provision(session, server, {"name": "Front desk", "flow": FRONT_DESK})
    sid, _, params = await answered(session, server, line)
    silence = b"\xff" * 160
    async with session.ws_connect(server.ws + "/twilio/media") as ws:
        stream = Stream(ws, sid)
        await stream.start(params)

        async def caller_silence() -> None:
            # Twilio streams the caller's line continuously, silent or not.
            while True:
                await stream.media(silence)
                await asyncio.sleep(0.02)

        quiet = asyncio.get_running_loop().create_task(caller_silence())
        try:
            greeting = await stream.receive_media(50, within=90.0)
        finally:
            quiet.cancel()
        assert len(set(greeting)) > 16, "the greeting is audible speech, not silence"
        status, view = await call_api(
            session, "GET", server.http + "/system/status", server.ready["admin_token"]
        )
        assert status == 200
        mine = [w for w in view["workers"] if w["tenant_id"] == line.tenant]
        assert mine, view["workers"]
        for worker in mine:
            assert isinstance(worker["pid"], int) and worker["pid"] > 0
            assert isinstance(worker["calls"], int)
            assert isinstance(worker["cpu_percent"], int | float)
            assert isinstance(worker["rss_mb"], int | float)
        await stream.stop()
