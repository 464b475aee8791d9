"""Text preview WebSocket: the demo receptionist's flow engine, text in, actions out."""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType

from tests.conftest import ApiServer
from tests.server.test_api import new_tenant


async def _create(api: ApiServer) -> tuple[str, dict[str, str], str]:
    tenant_id, key = await new_tenant(api)
    headers = {"Authorization": f"Bearer {key}"}
    response = await api.client.post(
        f"/tenants/{tenant_id}/api/agents",
        json={"name": "desk", "template": "demo-receptionist"},
        headers=headers,
    )
    agent = await response.json()
    return tenant_id, headers, agent["id"]


async def _until(ws: Any, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for _ in range(50):
        message = await ws.receive(timeout=5.0)
        assert message.type is WSMsgType.TEXT, message
        event = message.json()
        seen.append(event)
        if event["type"] == kind:
            return seen
    raise AssertionError(f"no {kind} in {seen}")


async def test_preview_runs_the_flow(api: ApiServer) -> None:
    tenant_id, headers, agent_id = await _create(api)
    path = f"/tenants/{tenant_id}/api/agents/{agent_id}/preview"
    async with api.client.ws_connect(path, headers=headers) as ws:
        greeting = await _until(ws, "listen")
        assert any("How can I help" in e.get("text", "") for e in greeting)
        await ws.send_json({"type": "text", "text": "What are your opening hours on Saturday?"})
        answer = await _until(ws, "listen")
        assert any(e["type"] == "intent_matched" and e["intent"] == "hours" for e in answer)
        assert any("Saturday from ten to two" in e.get("text", "") for e in answer)
        await ws.send_json({"type": "dtmf", "digit": "x"})
        assert (await _until(ws, "error"))[-1]["code"] == "bad_digit"
        await ws.send_str("not json")
        assert (await _until(ws, "error"))[-1]["code"] == "bad_message"
        await ws.send_json({"type": "text", "text": "Goodbye."})
        bye = await _until(ws, "hangup")
        assert any("Goodbye" in e.get("text", "") for e in bye)
        closing = await ws.receive(timeout=5.0)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)


async def test_preview_is_tenant_scoped_and_listed_in_openapi(api: ApiServer) -> None:
    tenant_id, _headers, agent_id = await _create(api)
    other_id, other_key = await new_tenant(api, name="other")
    response = await api.client.get(
        f"/tenants/{tenant_id}/api/agents/{agent_id}/preview",
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert response.status == 404
    response = await api.client.get(
        f"/tenants/{other_id}/api/agents/{agent_id}/preview",
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert response.status == 404
    spec = await (await api.client.get("/openapi.json")).json()
    assert "/tenants/{tenant_id}/api/agents/{agent_id}/preview" in spec["paths"]
