"""Trunk, dial-policy and outbound-call routes over HTTP (embedded Redis, fake dialer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ADMIN_TOKEN
from tests.server.test_outbound import FakeDialer
from voxgate.server.app import create_app
from voxgate.server.call_control import CallControl
from voxgate.server.config import Config
from voxgate.server.outbound import Orchestrator
from voxgate.server.routes_trunks import OUTBOUND, OutboundParts
from voxgate.server.services import Services
from voxgate.tenants.calls import CallRecords

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, FakeDialer]]:  # type: ignore[type-arg]
    config = Config(data_dir=tmp_path / "data", http_port=0, admin_token=ADMIN_TOKEN)
    services = await Services.open(config)
    dialer = FakeDialer()
    try:
        await services.admin_tokens.ensure(ADMIN_TOKEN)
        app = create_app(config, services)
        orchestrator = Orchestrator(
            services, CallControl(), CallRecords(services.store), dialer=dialer
        )
        app[OUTBOUND] = OutboundParts(orchestrator=orchestrator)
        async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
            yield test_client, dialer
        await orchestrator.close()
    finally:
        await services.close()


async def _tenant(client: TestClient, name: str) -> tuple[str, dict[str, str]]:  # type: ignore[type-arg]
    response = await client.post("/system/tenants", json={"name": name}, headers=ADMIN)
    body = await response.json()
    return body["id"], {"Authorization": f"Bearer {body['api_key']}"}


async def test_trunk_crud_policy_and_calls(client: tuple[TestClient, FakeDialer]) -> None:  # type: ignore[type-arg]
    http, dialer = client
    tenant_id, auth = await _tenant(http, "A")
    other_id, other_auth = await _tenant(http, "B")
    base = f"/tenants/{tenant_id}/api"
    made = await http.post(
        f"{base}/trunks",
        json={"name": "voip.ms", "preset": "voipms", "username": "100000_a",
              "password": "zz-api-pw", "caller_id": "+15145550100"},
        headers=auth,
    )  # fmt: skip
    assert made.status == 201, await made.text()
    text = await made.text()
    assert "zz-api-pw" not in text
    view: dict[str, Any] = await made.json()
    trunk_id = view["trunk"]["id"]
    assert view["trunk"]["hosts"][0] == "atlanta.voip.ms" and view["registration"] is None
    listed = await (await http.get(f"{base}/trunks", headers=auth)).json()
    assert [t["trunk"]["id"] for t in listed["trunks"]] == [trunk_id]
    patched = await http.patch(
        f"{base}/trunks/{trunk_id}", json={"hosts": ["chicago.voip.ms"]}, headers=auth
    )
    assert (await patched.json())["trunk"]["hosts"] == ["chicago.voip.ms"]
    bad = await http.post(f"{base}/trunks", json={"name": "x", "username": "u"}, headers=auth)
    assert bad.status == 422
    # Another tenant's key sees nothing of A.
    stolen = await http.get(f"{base}/trunks/{trunk_id}", headers=other_auth)
    assert stolen.status == 404
    assert (
        await http.get(f"/tenants/{other_id}/api/trunks/{trunk_id}", headers=other_auth)
    ).status == 404

    policy = await (await http.get(f"{base}/dial-policy", headers=auth)).json()
    assert policy["effective_home_country_code"] == "1" and policy["allowed_prefixes"] == []
    put = await http.put(f"{base}/dial-policy", json={"allowed_prefixes": ["+1416"]}, headers=auth)
    assert (await put.json())["allowed_prefixes"] == ["+1416"]
    assert (
        await http.put(f"{base}/dial-policy", json={"allowed_prefixes": ["44"]}, headers=auth)
    ).status == 422

    agent = await (
        await http.post(f"{base}/agents", json={"name": "E", "template": "echo"}, headers=auth)
    ).json()
    call = {"to": "+14155550100", "agent_id": agent["id"], "via": f"trunk:{trunk_id}"}
    refused = await http.post(f"{base}/calls", json=call, headers=auth)
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "dial_refused"
    call["to"] = "+14165550100"
    placed = await http.post(f"{base}/calls", json=call, headers=auth)
    assert placed.status == 201, await placed.text()
    body = await placed.json()
    assert body["provider"] == "sip" and body["from"] == "+15145550100" and body["id"]
    await asyncio.wait_for(dialer.done.wait(), 5)
    assert dialer.dials[0].call_id == body["id"]
    bad_via = await http.post(f"{base}/calls", json={**call, "via": "fax"}, headers=auth)
    assert bad_via.status == 422

    assert (await http.delete(f"{base}/trunks/{trunk_id}", headers=auth)).status == 204
    assert (await http.get(f"{base}/trunks/{trunk_id}", headers=auth)).status == 404
    spec = await (await http.get("/openapi.json")).json()
    assert f"{'/tenants/{tenant_id}/api'}/dial-policy" in spec["paths"]
