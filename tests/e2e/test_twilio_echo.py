"""End to end: a real voxgate server (embedded Redis, real HTTP port) called by
the Twilio load caller, with the echo agent; and SIGTERM draining a live call
in a server subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from loadtest.twilio_caller import CallerConfig, Outcome, run_call
from tests.server.test_twilio_media import FRAME, Peer, caller_audio
from tests.server.test_twilio_webhook import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    PUBLIC_URL,
    reference_signature,
    sid,
    stream_of,
    voice_form,
)
from voxgate.media import g711
from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.runtime import Server

ADMIN = "e2e-admin-token-0123456789abcdef"


@dataclass
class Provisioned:
    http: str
    tenant_id: str
    api_key: str
    server: Server | None = None

    async def calls_idle(self) -> None:
        """Until every call has ended and its record is written."""
        assert self.server is not None and self.server._runner is not None
        await self.server._runner.app[CALLS].control.wait_idle()


async def provision(session: aiohttp.ClientSession, http: str) -> Provisioned:
    """A tenant with an echo agent on ``NUMBER`` and its Twilio secret, over the API."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with session.post(f"{http}/system/tenants", json={"name": "e2e"}, headers=admin) as r:
        assert r.status == 201
        created = await r.json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    base = f"{http}/tenants/{created['id']}/api"
    async with session.post(
        f"{base}/agents", json={"name": "echo", "template": "echo"}, headers=headers
    ) as r:
        agent = await r.json()
    async with session.post(
        f"{base}/numbers",
        json={"number": NUMBER, "provider": "twilio", "agent_id": agent["id"]},
        headers=headers,
    ) as r:
        assert r.status == 201
    secret = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    async with session.put(f"{base}/secrets/twilio", json=secret, headers=headers) as r:
        assert r.status == 204
    return Provisioned(http=http, tenant_id=created["id"], api_key=created["api_key"])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Provisioned]:
    config = Config(
        data_dir=tmp_path / "data",
        http_port=0,
        public_url=PUBLIC_URL,
        admin_token=ADMIN,
        drain_timeout=2.0,
    )
    instance = Server(config)
    ready = await instance.start()
    try:
        async with aiohttp.ClientSession() as session:
            provisioned = await provision(session, ready.http)
        provisioned.server = instance
        yield provisioned
    finally:
        await instance.stop()


def caller(server: Provisioned, **extra: object) -> CallerConfig:
    return CallerConfig(
        url=server.http,
        public_url=PUBLIC_URL,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        to=NUMBER,
        audio=("book_appointment",),
        silence_before_s=0.2,
        silence_after_s=0.5,
        duration_s=3.0,
        keep_audio=True,
        max_call_s=15.0,
        **extra,  # type: ignore[arg-type]
    )


async def test_echo_returns_the_callers_audio_with_marks_and_clear(server: Provisioned) -> None:
    plain, barged = await asyncio.gather(
        run_call(caller(server), index=0),
        # A key press makes the echo agent barge in: pending audio is cleared.
        run_call(caller(server, dtmf="1", dtmf_at_s=2.0), index=1),
    )
    report = plain.report
    assert report.outcome is Outcome.COMPLETED, report.error
    sent, received = plain.sent_audio, plain.received_audio
    # Everything received is the caller's audio, in order, from the start.
    assert len(received) >= len(sent) - 20 * FRAME
    assert received == sent[: len(received)]
    # ...and decodes to the same PCM the caller encoded (G.711 round trip).
    assert np.array_equal(g711.ulaw_decode(received), g711.ulaw_decode(sent[: len(received)]))
    assert report.marks_received >= 2
    assert report.marks_echoed == report.marks_received
    assert report.protocol_errors == 0
    assert report.clears == 0

    barge = barged.report
    assert barge.outcome is Outcome.COMPLETED, barge.error
    assert barge.clears == 1
    assert barge.dtmf_sent == 1

    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        url = f"{server.http}/tenants/{server.tenant_id}/api/calls/{report.call_sid}"
        await asyncio.wait_for(server.calls_idle(), 10)
        async with session.get(url, headers=headers) as r:
            detail = await r.json()
        assert detail["call"]["status"] == "completed"
        assert detail["call"]["end_reason"] == "caller_hangup"
        assert detail["call"]["frames_out"] * FRAME >= len(received)


# -- SIGTERM drain ------------------------------------------------------------------


async def _ready(path: Path, proc: asyncio.subprocess.Process) -> dict[str, str]:
    """The ready file, once the server announced (after writing it) that it listens."""
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while b"listening on" not in (line := await proc.stdout.readline()):
            assert line, "server exited before it was ready"
    return json.loads(await asyncio.to_thread(path.read_text))


async def _open_call(session: aiohttp.ClientSession, http: str, n: int) -> Peer:
    form = voice_form(sid(n))
    signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + "/twilio/webhook", form)
    async with session.post(
        f"{http}/twilio/webhook", data=form, headers={"X-Twilio-Signature": signature}
    ) as r:
        assert r.status == 200
        _, params, _ = stream_of(await r.text())
    ws = await session.ws_connect(http.replace("http", "ws", 1) + "/twilio/media")
    peer = Peer(ws, f"MZ{n:032x}")
    await peer.start(params["token"], sid(n))
    return peer


async def _talk(peer: Peer, audio: bytes, frames: int) -> None:
    for _ in range(frames):
        k = peer.chunk % (len(audio) // FRAME)
        await peer.media(audio[k * FRAME : (k + 1) * FRAME])


@pytest.mark.allow_blocking
async def test_sigterm_drains_live_calls_then_exits_zero(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    env = {**os.environ, "VOXGATE_ADMIN_TOKEN": ADMIN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from voxgate.server.cli import main; raise SystemExit(main())",
        "serve", "--http-port", "0", "--sip-port", "0", "--data-dir", str(tmp_path / "data"),
        "--ready-file", str(ready_file), "--public-url", PUBLIC_URL, "--drain-timeout", "4",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        http = (await _ready(ready_file, proc))["http"]
        audio = caller_audio(50)
        async with aiohttp.ClientSession() as session:
            await provision(session, http)
            finishing = await _open_call(session, http, 1)
            stuck = await _open_call(session, http, 2)
            for peer in (finishing, stuck):
                await _talk(peer, audio, 15)
                await peer.receive_audio(3)  # both calls are live and echoing

            proc.send_signal(signal.SIGTERM)
            # Draining: the live call is still served...
            await _talk(finishing, audio, 20)
            echoed, _ = await finishing.receive_audio(15)
            assert len(echoed) >= 15 * FRAME
            # ...and ends normally when the caller hangs up.
            await finishing.stop()
            # The call that never ends is hung up when the drain time runs out.
            async with asyncio.timeout(10):
                while True:
                    message = await stuck.ws.receive()
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
            await finishing.ws.close()
            await stuck.ws.close()
        async with asyncio.timeout(15):
            code = await proc.wait()
        assert code == 0
        assert not ready_file.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
