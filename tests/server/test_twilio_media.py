"""Media Streams WebSocket through the real app: tokens, echo, records, recordings,
status, and malformed frames from a hostile or broken peer."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN
from tests.server.test_twilio_webhook import (
    ACCOUNT_SID,
    TwilioEnv,
    post_signed,
    sid,
    start_env,
    stream_of,
    voice_form,
)
from voxgate.media import g711

FRAME = 160


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[TwilioEnv]:
    async for value in start_env(tmp_path):
        yield value


def caller_audio(frames: int, seed: int = 7) -> bytes:
    """Speech-like µ-law: a random-walk waveform (no two frames alike)."""
    rng = np.random.default_rng(seed)
    pcm = np.cumsum(rng.normal(0, 600, frames * FRAME)).clip(-20000, 20000).astype(np.int16)
    return g711.ulaw_encode(pcm)


class Peer:
    """The Twilio side of one Media Streams socket, driven by the test."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.seq = 0
        self.chunk = 0

    def _seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def start(self, token: str, call_sid: str) -> None:
        await self.ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequenceNumber": self._seq(),
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": ACCOUNT_SID,
                "callSid": call_sid,
                "streamSid": self.stream_sid,
                "tracks": ["inbound"],
                "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        await self.ws.send_str(json.dumps(start))

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        message = {
            "event": "media",
            "sequenceNumber": self._seq(),
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(self.chunk),
                "timestamp": str((self.chunk - 1) * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
        await self.ws.send_str(json.dumps(message))

    async def event(self, event: str, body: dict[str, Any]) -> None:
        message = {"event": event, "sequenceNumber": self._seq(), "streamSid": self.stream_sid}
        message.update(body)
        await self.ws.send_str(json.dumps(message))

    async def stop(self) -> None:
        await self.event("stop", {"stop": {"accountSid": ACCOUNT_SID, "callSid": ""}})

    async def receive_audio(self, frames: int, within: float = 5.0) -> tuple[bytes, list[str]]:
        """Collect ``frames`` frames of agent audio (and any marks/clears seen)."""
        audio = bytearray()
        others: list[str] = []
        async with asyncio.timeout(within):
            while len(audio) < frames * FRAME:
                message = await self.ws.receive()
                assert message.type is aiohttp.WSMsgType.TEXT, message
                data = json.loads(message.data)
                assert data["streamSid"] == self.stream_sid
                if data["event"] == "media":
                    audio += base64.b64decode(data["media"]["payload"])
                else:
                    others.append(data["event"])
        return bytes(audio), others


async def new_call(env: TwilioEnv, n: int) -> tuple[str, str]:
    """Webhook for call ``n``: (CallSid, token)."""
    status, body = await post_signed(env, voice_form(sid(n)))
    assert status == 200, body
    _, params, _ = stream_of(body)
    return sid(n), params["token"]


async def connect(env: TwilioEnv, n: int) -> Peer:
    call_sid, token = await new_call(env, n)
    ws = await env.client.ws_connect("/twilio/media")
    peer = Peer(ws, "MZ" + f"{n:032x}")
    await peer.start(token, call_sid)
    return peer


async def test_echo_call_round_trip_record_and_recording(env: TwilioEnv) -> None:
    peer = await connect(env, 1)
    audio = caller_audio(40)
    for i in range(40):
        await peer.media(audio[i * FRAME : (i + 1) * FRAME])
    # The echo agent returns audio 200 ms (10 frames) behind, byte for byte.
    echoed, _ = await peer.receive_audio(30)
    assert echoed == audio[: 30 * FRAME]

    status = await env.client.get(
        "/system/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    view = await status.json()
    assert [c["id"] for c in view["calls"]] == [sid(1)]
    assert view["calls"][0]["provider"] == "twilio"
    live = next(t for t in view["tenants"] if t["id"] == env.tenant_id)
    assert live["live"]["calls"] == 1

    await peer.stop()
    message = await peer.ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await peer.ws.close()
    await asyncio.wait_for(env.runtime.control.wait_idle(), 5)

    base = f"/tenants/{env.tenant_id}/api/calls"
    detail = await (await env.client.get(f"{base}/{sid(1)}", headers=env.tenant_headers())).json()
    record = detail["call"]
    assert record["status"] == "completed"
    assert record["end_reason"] == "caller_hangup"
    assert record["frames_in"] >= 40  # plus silence filling the time after the last frame
    assert record["frames_out"] >= 30
    assert record["duration"] > 0
    assert record["recording"] is True
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[:2] == ["ringing", "connected"] and "ended" in kinds

    response = await env.client.get(f"{base}/{sid(1)}/recording", headers=env.tenant_headers())
    assert response.status == 200
    assert response.content_type == "audio/wav"
    with wave.open(io.BytesIO(await response.read())) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        assert wav.getnframes() >= 30 * FRAME
    page = await (await env.client.get(base, headers=env.tenant_headers())).json()
    assert [c["id"] for c in page["calls"]] == [sid(1)]


@pytest.mark.parametrize("case", ["reused", "unknown", "missing", "wrong_call"])
async def test_bad_token_closes_1008(env: TwilioEnv, case: str) -> None:
    call_sid, token = await new_call(env, 2)
    if case == "reused":
        first = Peer(await env.client.ws_connect("/twilio/media"), "MZ1")
        await first.start(token, call_sid)
        for _ in range(12):
            await first.media(b"\x7f" * FRAME)
        await first.receive_audio(2)  # audio back: the token was redeemed
    elif case == "unknown":
        token = "not-a-token"
    elif case == "missing":
        token = ""
    else:
        call_sid = sid(99)
    ws = await env.client.ws_connect("/twilio/media")
    await Peer(ws, "MZ2").start(token, call_sid)
    message = await ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008
    await ws.close()


async def test_dtmf_clears_pending_audio_and_marks_are_confirmed(env: TwilioEnv) -> None:
    peer = await connect(env, 3)
    audio = caller_audio(70)
    for i in range(70):
        await peer.media(audio[i * FRAME : (i + 1) * FRAME])
    # 60 frames go back; after the 50th a mark follows it.
    _, others = await peer.receive_audio(51)
    assert "mark" in others
    live = env.runtime.control.get(sid(3))
    assert live is not None and live.channel is not None
    assert live.channel.has_pending_audio
    await peer.event("dtmf", {"dtmf": {"track": "inbound_track", "digit": "5"}})
    seen: list[str] = []
    async with asyncio.timeout(5):
        while "clear" not in seen:
            data = json.loads((await peer.ws.receive()).data)
            seen.append(data["event"])
    assert not live.channel.has_pending_audio
    await peer.ws.close()


# -- malformed frames -----------------------------------------------------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_EVENTS = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "x", ""])
_MALFORMED = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    _JSONISH.map(json.dumps),
    st.builds(
        lambda event, body: json.dumps({"event": event, **body}),
        _EVENTS.filter(lambda e: e != "stop"),
        st.dictionaries(
            st.sampled_from(["media", "streamSid", "sequenceNumber", "dtmf", "mark", "start"]),
            _JSONISH,
            max_size=4,
        ),
    ),
    st.builds(
        lambda payload, ts: json.dumps(
            {"event": "media", "media": {"payload": payload, "timestamp": ts}}
        ),
        st.text(max_size=40),
        st.one_of(st.integers(-(10**12), 10**12), st.text(max_size=8)),
    ),
)


def malformed_batches(count: int) -> list[list[str | bytes]]:
    """Batches of hostile frames drawn by hypothesis (collected, then replayed live)."""
    batches: list[list[str | bytes]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_MALFORMED, min_size=1, max_size=25))
    def collect(batch: list[str | bytes]) -> None:
        batches.append(batch)

    collect()
    return batches


async def test_malformed_frames_never_hurt_the_server_or_another_call(env: TwilioEnv) -> None:
    healthy = await connect(env, 10)
    clean = caller_audio(20, seed=1)
    batches = await asyncio.to_thread(malformed_batches, 40)
    hostile = await connect(env, 11)
    for index, batch in enumerate(batches):
        for frame in batch:
            if hostile.ws.closed:
                break
            if isinstance(frame, bytes):
                await hostile.ws.send_bytes(frame)
            else:
                await hostile.ws.send_str(frame)
        # The healthy call keeps flowing meanwhile.
        await healthy.media(clean[(index % 20) * FRAME : (index % 20 + 1) * FRAME])
    # A socket that only ever sent garbage (no start) is held to the start timeout.
    garbage = await env.client.ws_connect("/twilio/media")
    for frame in batches[0]:
        if isinstance(frame, bytes):
            await garbage.send_bytes(frame)
        else:
            await garbage.send_str(frame)
    # Healthy call: its audio still comes back in order.
    echoed, _ = await healthy.receive_audio(30, within=10)
    assert len(echoed) >= 30 * FRAME
    assert echoed.startswith(clean[: 10 * FRAME])
    # The hostile call may have been stopped by a drawn "stop", never crashed the server.
    response = await env.client.get("/healthz")
    assert response.status == 200
    fresh = await connect(env, 12)
    for i in range(15):
        await fresh.media(clean[i * FRAME : (i + 1) * FRAME])
    echoed, _ = await fresh.receive_audio(5)
    assert echoed == clean[: 5 * FRAME]
    for peer in (healthy, hostile, fresh):
        await peer.ws.close()
    await garbage.close()
    await asyncio.wait_for(env.runtime.control.wait_idle(), 5)
    # Problems were counted (per kind) when the hostile call ended.
    metrics = await (await env.client.get("/metrics")).text()
    errors = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("voxgate_twilio_ws_errors_total{")
    ]
    assert sum(errors) > 0
