"""SIP wiring of a real server: ready file, drain order, trunk registrations in the APIs."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voxgate.server.config import Config
from voxgate.server.routes_trunks import OUTBOUND
from voxgate.server.runtime import Server
from voxgate.server.telephony import SipStarter, sip_listener_hook
from voxgate.sip.sdp import SdpSession
from voxgate.sip.transaction import TimerConfig, Transport
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import CallFailed, IncomingInvite, Session, SessionEnd, UserAgent
from voxgate.sip.uri import SipUri
from voxgate.tenants.models import TenantCreate


class _Quiet:
    async def handle_invite(self, invite: IncomingInvite) -> None:
        invite.reject(603)


class _Listener:
    def session_confirmed(self, session: Session) -> None: ...
    def session_reoffer(self, session: Session, offer: object) -> bytes:
        raise NotImplementedError

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None: ...
    def session_ended(self, session: Session, reason: SessionEnd) -> None: ...


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, SipStarter]]:
    base = random.randrange(30000, 58000, 2)
    config = Config(
        data_dir=tmp_path / "data", http_port=0, sip_port=0, rtp_ports=(base, base + 99),
        ready_file=tmp_path / "ready.json", drain_timeout=1.0,
    )  # fmt: skip
    server = Server(config)
    starter = sip_listener_hook(server, ring_seconds=0)
    server.listener_hooks.append(starter)
    await server.start()
    try:
        yield server, starter
    finally:
        await server.stop()


async def _get(server: Server, path: str, body: Any = None, method: str = "GET") -> Any:
    ready = server.ready
    assert ready is not None and ready.admin_token is not None
    headers = {"Authorization": f"Bearer {ready.admin_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, ready.http + path, json=body, headers=headers) as response,
    ):
        assert response.status < 300, await response.text()
        return None if response.status == 204 else await response.json()


async def test_ready_file_and_drain_order(
    server: tuple[Server, SipStarter], tmp_path: Path
) -> None:
    srv, starter = server
    ready = json.loads((tmp_path / "ready.json").read_text())
    assert ready["sip_udp"] == ready["sip_tcp"]
    assert ready["sip_udp"].startswith("127.0.0.1:") and not ready["sip_udp"].endswith(":0")
    assert starter.listener is not None
    sip = starter.listener.sip
    assert srv.drain_hooks[0] == sip.drain  # new INVITEs are refused first
    parts = srv.app[OUTBOUND]
    assert parts.orchestrator is not None and parts.orchestrator.dialer is sip.gateway
    assert parts.registrations is starter.listener.registrations


async def test_draining_server_answers_invites_503(server: tuple[Server, SipStarter]) -> None:
    srv, starter = server
    assert starter.listener is not None
    await starter.listener.sip.drain(0)
    transports = SipTransports()
    await transports.listen_udp("127.0.0.1", 0)
    ua = UserAgent(transports, _Quiet(), advertised_host="127.0.0.1", timers=TimerConfig(t1=0.1))
    assert srv.ready is not None and srv.ready.sip_udp is not None
    port = int(srv.ready.sip_udp.rsplit(":", 1)[1])
    try:
        with pytest.raises(CallFailed) as failed:
            async with asyncio.timeout(5):
                await ua.invite(
                    SipUri(host="127.0.0.1", port=port, user="+15551230001"),
                    ("127.0.0.1", port),
                    sdp=SdpSession("127.0.0.1", 40000).create_offer().to_bytes(),
                    listener=_Listener(),
                    transport=Transport.UDP,
                )
        assert failed.value.status == 503
    finally:
        await ua.close()
        await transports.close()


async def test_trunk_registration_status_in_apis(server: tuple[Server, SipStarter]) -> None:
    srv, _ = server
    created = await srv.services.registry.create(TenantCreate(name="reg"), "test")
    # A registrar that never answers: the client keeps trying and says so.
    trunk = await _get(
        srv, f"/tenants/{created.id}/api/trunks",
        {"name": "nowhere", "hosts": ["127.0.0.1:9"], "username": "100000",
         "password": "zz-pw", "register": True},
        method="POST",
    )  # fmt: skip
    assert trunk["registration"] is not None
    assert trunk["registration"]["state"] != "registered"
    status = await _get(srv, "/system/status")
    entries = status["trunk_registrations"]
    assert [(e["tenant_id"], e["trunk_id"]) for e in entries] == [
        (created.id, trunk["trunk"]["id"])
    ]
    await _get(srv, f"/tenants/{created.id}/api/trunks/{trunk['trunk']['id']}", method="DELETE")
    assert (await _get(srv, "/system/status"))["trunk_registrations"] == []
