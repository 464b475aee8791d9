"""Outbound calls through a SIP trunk on a real server, with sipp as the carrier.

``POST /tenants/{id}/api/calls`` with ``via: trunk:<id>``: the INVITE is
challenged (digest), retried with the trunk's credentials and caller ID,
answered with SDP; our prompt agent plays its tones, sipp echoes the RTP
back, and our agent hangs up.  The call record shows the whole call.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.sip_env import SipEnv, sip_server
from voxgate.server.call_control import CALLS
from voxgate.tenants.calls import CallRecords

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CALLER_ID = "+15557654321"
DESTINATION = "+14155550100"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SipEnv]:
    async with sip_server(tmp_path) as env:
        yield env


async def _api(env: SipEnv, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    ready = env.server.ready
    assert ready is not None and ready.admin_token is not None
    url = f"{ready.http}/tenants/{env.tenant_id}/api{path}"
    headers = {"Authorization": f"Bearer {ready.admin_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_outbound_call_through_trunk_with_digest(env: SipEnv) -> None:
    sipp_port = _free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "uas_invite_digest.xml"), "-i", "127.0.0.1",
        "-p", str(sipp_port), "-mi", "127.0.0.1", "-mp", str(_free_udp_port()), "-rtp_echo",
        "-m", "1", "-timeout", "30", "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        status, trunk = await _api(
            env, "POST", "/trunks",
            {"name": "carrier", "hosts": [f"127.0.0.1:{sipp_port}"], "username": "100000_agent",
             "password": "zz-trunk-pw", "register": False, "caller_id": CALLER_ID},
        )  # fmt: skip
        assert status == 201, trunk
        trunk_id = trunk["trunk"]["id"]
        assert trunk["registration"] is None  # it does not register
        status, placed = await _api(
            env, "POST", "/calls",
            {"to": DESTINATION, "agent_id": env.prompt_agent, "via": f"trunk:{trunk_id}"},
        )  # fmt: skip
        assert status == 201, placed
        assert placed["provider"] == "sip" and placed["from"] == CALLER_ID
        async with asyncio.timeout(30):
            out, _ = await proc.communicate()
            await env.server.app[CALLS].control.wait_idle()
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    records = CallRecords(env.services.store)
    detail = await records.detail(env.tenant_id, placed["id"])
    call = detail.call
    assert call.status == "completed", call
    assert call.end_reason == "agent_hangup"
    assert call.started_at is not None and call.duration is not None and call.duration > 1.0
    assert call.from_number == CALLER_ID and call.to_number == DESTINATION
    assert call.frames_out >= 60  # 1.4 s of tones
    assert call.frames_in > 0  # sipp echoed our RTP
    kinds = [e.kind for e in detail.events]
    assert "outbound" in kinds and "rtp_stats" in kinds
