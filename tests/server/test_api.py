"""HTTP API against a real embedded Redis: every route's happy path and its errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest
from aiohttp import WSMsgType

from tests.conftest import ApiServer
from voxgate.admin.status import CallStatus, LiveCounters, WorkerStatus

FLOW: dict[str, Any] = {
    "schema": "flowspec/1",
    "id": "front-desk",
    "locale": "en-US",
    "slots": [],
    "entities": [],
    "globals": [],
    "layout": {},
    "intents": [
        {"name": "hours", "examples": ["When are you open?", "What are your opening hours?"]},
        {"name": "booking", "examples": ["I want to book.", "Can I make a reservation?"]},
    ],
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "hello", "type": "say", "text": "Hi, this is the front desk."},
        {"id": "ask", "type": "intent"},
        {"id": "hours", "type": "say", "text": "We open at eight."},
        {"id": "book", "type": "say", "text": "What day works for you?"},
        {"id": "sorry", "type": "say", "text": "Sorry?"},
    ],
    "edges": [
        {"id": "e1", "source": "start", "port": "next", "target": "hello"},
        {"id": "e2", "source": "hello", "port": "next", "target": "ask"},
        {"id": "e3", "source": "ask", "port": "hours", "target": "hours"},
        {"id": "e4", "source": "ask", "port": "booking", "target": "book"},
        {"id": "e5", "source": "ask", "port": "fallback", "target": "sorry"},
        {"id": "e6", "source": "hours", "port": "next", "target": "ask"},
        {"id": "e7", "source": "book", "port": "next", "target": "ask"},
        {"id": "e8", "source": "sorry", "port": "next", "target": "ask"},
    ],
}


async def new_tenant(api: ApiServer, name: str = "acme", **extra: Any) -> tuple[str, str]:
    response = await api.client.post(
        "/system/tenants", json={"name": name, **extra}, headers=api.admin()
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert set(body) >= {"id", "api_key"}
    return body["id"], body["api_key"]


async def error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


async def test_healthz_metrics_openapi(api: ApiServer) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    await api.client.get("/system/tenants", headers=api.admin())
    metrics = await (await api.client.get("/metrics")).text()
    assert 'voxgate_http_requests_total{method="GET",route="/system/tenants",status="200"}' in (
        metrics
    )
    assert "voxgate_http_request_duration_seconds_bucket" in metrics
    assert "process_resident_memory_bytes" in metrics
    document = await (await api.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    for path, method in [
        ("/system/tenants", "post"),
        ("/system/tenants/{tenant_id}", "patch"),
        ("/system/status", "get"),
        ("/system/metrics/ws", "get"),
        ("/tenants/{tenant_id}/api/agents", "post"),
        ("/tenants/{tenant_id}/api/secrets/{name}", "put"),
        ("/tenants/{tenant_id}/api/numbers/{number_id}", "delete"),
    ]:
        assert method in paths[path], (path, method)
    schemas = document["components"]["schemas"]
    assert schemas["Quotas"]["properties"]["max_cps"]["maximum"] == 1000
    assert sorted(schemas["NumberCreate"]["properties"]["provider"]["enum"]) == ["sip", "twilio"]


async def test_healthz_degraded_while_redis_is_unreachable(api: ApiServer) -> None:
    services = api.services
    pid = services.store.embedded_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # Redis stops answering but keeps its socket
    try:
        async with asyncio.timeout(30):
            await services.store.wait_until(lambda: not services.store.healthy)
        response = await api.client.get("/healthz")
        assert response.status == 503
        assert await response.json() == {"status": "degraded", "redis": False}
    finally:
        os.kill(pid, signal.SIGCONT)
    async with asyncio.timeout(30):
        await services.store.wait_until(lambda: services.store.healthy)
    assert (await api.client.get("/healthz")).status == 200


async def test_tenant_lifecycle(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api, quotas={"max_concurrent_calls": 3})
    response = await api.client.get(f"/system/tenants/{tenant_id}", headers=api.admin())
    tenant = await response.json()
    assert tenant["name"] == "acme" and tenant["status"] == "active"
    assert tenant["quotas"]["max_concurrent_calls"] == 3
    assert tenant["quotas"]["max_cps"] == 5  # default kept

    listing = await (await api.client.get("/system/tenants", headers=api.admin())).json()
    assert [t["id"] for t in listing["tenants"]] == [tenant_id]

    response = await api.client.patch(
        f"/system/tenants/{tenant_id}",
        json={"name": "acme2", "quotas": {"max_cps": 9}},
        headers=api.admin(),
    )
    updated = await response.json()
    assert updated["name"] == "acme2" and updated["quotas"]["max_cps"] == 9
    assert updated["quotas"]["max_concurrent_calls"] == 3

    tenant_api = f"/tenants/{tenant_id}/api/quotas"
    assert (await api.client.get(tenant_api, headers=api.bearer(key))).status == 200
    response = await api.client.post(f"/system/tenants/{tenant_id}/suspend", headers=api.admin())
    assert (await response.json())["status"] == "suspended"
    await error(await api.client.get(tenant_api, headers=api.bearer(key)), 401, "unauthorized")
    # the admin still reaches a suspended tenant's API
    assert (await api.client.get(tenant_api, headers=api.admin())).status == 200
    response = await api.client.post(f"/system/tenants/{tenant_id}/resume", headers=api.admin())
    assert (await response.json())["status"] == "active"
    assert (await api.client.get(tenant_api, headers=api.bearer(key))).status == 200

    response = await api.client.delete(f"/system/tenants/{tenant_id}", headers=api.admin())
    assert response.status == 204
    await error(
        await api.client.get(f"/system/tenants/{tenant_id}", headers=api.admin()), 404, "not_found"
    )
    await error(await api.client.get(tenant_api, headers=api.bearer(key)), 401)
    await error(await api.client.get(tenant_api, headers=api.admin()), 404, "not_found")


async def test_tenant_validation_errors(api: ApiServer) -> None:
    post = api.client.post
    err = await error(
        await post("/system/tenants", json={"name": "x", "quotas": {"max_cps": 0}},
                   headers=api.admin()),
        422, "invalid",
    )  # fmt: skip
    assert err["path"] == "$.quotas.max_cps"
    err = await error(await post("/system/tenants", json={}, headers=api.admin()), 422)
    assert err["path"] == "$.name"
    err = await error(
        await api.client.patch("/system/tenants/t_aaaaaaaaaa", json={"name": ""},
                               headers=api.admin()),
        422,
    )  # fmt: skip
    assert err["path"] == "$.name"
    await error(
        await api.client.patch("/system/tenants/t_aaaaaaaaaa", json={"name": "n"},
                               headers=api.admin()),
        404, "not_found",
    )  # fmt: skip
    await error(await post("/system/tenants/nope/suspend", headers=api.admin()), 404)


async def test_auth_rules(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api)
    await error(await api.client.get("/system/tenants"), 401, "unauthorized")
    response = await api.client.get("/system/tenants", headers=api.bearer("wrong"))
    await error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    await error(await api.client.get("/system/tenants", headers={"Authorization": "Basic x"}), 401)
    # a valid tenant key is not enough for admin routes
    await error(await api.client.get("/system/tenants", headers=api.bearer(key)), 403, "forbidden")
    await error(await api.client.get(f"/tenants/{tenant_id}/api/agents"), 401)
    await error(
        await api.client.get(f"/tenants/{tenant_id}/api/agents", headers=api.bearer(key + "x")),
        401,
    )


async def test_agents_crud_and_versions(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api)
    base = f"/tenants/{tenant_id}/api"
    headers = api.bearer(key)

    templates = await (await api.client.get(f"{base}/templates", headers=headers)).json()
    names = {t["name"] for t in templates["templates"]}
    assert {"demo-receptionist", "echo"} <= names

    response = await api.client.post(
        f"{base}/agents", json={"name": "Front", "template": "demo-receptionist"}, headers=headers
    )
    assert response.status == 201
    front = await response.json()
    assert front["name"] == "Front" and front["kind"] == "flow" and front["version"] == 1
    assert front["flow"]["schema"] == "flowspec/1"

    response = await api.client.post(
        f"{base}/agents", json={"name": "Echo", "template": "echo"}, headers=headers
    )
    echo = await response.json()
    assert response.status == 201 and echo["kind"] == "echo" and echo["flow"] is None

    response = await api.client.post(
        f"{base}/agents", json={"name": "Desk", "flow": FLOW}, headers=headers
    )
    assert response.status == 201
    desk = await response.json()
    assert desk["warnings"] == []

    listing = await (await api.client.get(f"{base}/agents", headers=headers)).json()
    assert {a["id"] for a in listing["agents"]} == {front["id"], echo["id"], desk["id"]}
    got = await (await api.client.get(f"{base}/agents/{desk['id']}", headers=headers)).json()
    assert got["id"] == desk["id"]

    # a flow with an unreachable node is accepted with a warning
    lonely = {**FLOW, "nodes": [*FLOW["nodes"], {"id": "lonely", "type": "hangup"}]}
    response = await api.client.patch(
        f"{base}/agents/{desk['id']}", json={"flow": lonely, "name": "Desk 2"}, headers=headers
    )
    assert response.status == 200, await response.text()
    patched = await response.json()
    assert patched["version"] == 2 and patched["name"] == "Desk 2"
    assert any("lonely" in w for w in patched["warnings"])
    versions = await (
        await api.client.get(f"{base}/agents/{desk['id']}/versions", headers=headers)
    ).json()
    assert [v["version"] for v in versions["versions"]] == [1, 2] or [
        v["version"] for v in versions["versions"]
    ] == [2, 1]

    await error(
        await api.client.patch(f"{base}/agents/{echo['id']}", json={"flow": FLOW},
                               headers=headers),
        422, "invalid",
    )  # fmt: skip
    response = await api.client.delete(f"{base}/agents/{echo['id']}", headers=headers)
    assert response.status == 204
    await error(await api.client.get(f"{base}/agents/{echo['id']}", headers=headers), 404)
    await error(await api.client.delete(f"{base}/agents/{echo['id']}", headers=headers), 404)


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({"name": "x"}, "invalid", "$"),
        ({"name": "x", "template": "echo", "flow": FLOW}, "invalid", "$"),
        ({"name": "x", "template": "nope"}, "invalid", "$.template"),
        ({"name": "x", "flow": {**FLOW, "schema": "flowspec/9"}}, "invalid_flow", "$.flow.schema"),
        (
            {"name": "x", "flow": {**FLOW, "nodes": [*FLOW["nodes"], {"id": "q", "type": "zap"}]}},
            "invalid_flow",
            "$.flow.nodes[6]",
        ),
        (
            {
                "name": "x",
                "flow": {
                    **FLOW,
                    "edges": [
                        *FLOW["edges"],
                        {"id": "e9", "source": "hello", "port": "next", "target": "ghost"},
                    ],
                },
            },
            "invalid_flow",
            "$.flow.edges[8].target",
        ),
        (
            {
                "name": "x",
                "flow": {
                    **FLOW,
                    "edges": [
                        *FLOW["edges"],
                        {"id": "e9", "source": "hours", "port": "filled", "target": "ask"},
                    ],
                },
            },
            "invalid_flow",
            "$.flow.edges[8]",
        ),
    ],
)
async def test_agent_validation_errors(
    api: ApiServer, body: dict[str, Any], code: str, path: str
) -> None:
    tenant_id, key = await new_tenant(api)
    response = await api.client.post(
        f"/tenants/{tenant_id}/api/agents", json=body, headers=api.bearer(key)
    )
    err = await error(response, 422, code)
    assert err["path"].startswith(path), err


async def test_agent_quota(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api, quotas={"max_agents": 1})
    url = f"/tenants/{tenant_id}/api/agents"
    body = {"name": "a", "template": "echo"}
    assert (await api.client.post(url, json=body, headers=api.bearer(key))).status == 201
    await error(await api.client.post(url, json=body, headers=api.bearer(key)), 409,
                "quota_exceeded")  # fmt: skip


async def test_numbers(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api)
    other_id, other_key = await new_tenant(api, "other")
    base = f"/tenants/{tenant_id}/api"
    headers = api.bearer(key)
    agent = await (
        await api.client.post(
            f"{base}/agents", json={"name": "e", "template": "echo"}, headers=headers
        )
    ).json()
    body = {"number": "+14155550100", "provider": "twilio", "agent_id": agent["id"]}
    response = await api.client.post(f"{base}/numbers", json=body, headers=headers)
    assert response.status == 201
    number = await response.json()
    assert {k: number[k] for k in ("number", "provider", "agent_id")} == body
    assert number["id"]
    listing = await (await api.client.get(f"{base}/numbers", headers=headers)).json()
    assert [n["id"] for n in listing["numbers"]] == [number["id"]]

    # the same number cannot belong to another tenant
    other_agent = await (
        await api.client.post(
            f"/tenants/{other_id}/api/agents",
            json={"name": "o", "template": "echo"},
            headers=api.bearer(other_key),
        )
    ).json()
    response = await api.client.post(
        f"/tenants/{other_id}/api/numbers",
        json={**body, "agent_id": other_agent["id"]},
        headers=api.bearer(other_key),
    )
    await error(response, 409, "conflict")
    # nor be mapped to another tenant's agent
    response = await api.client.post(
        f"{base}/numbers", json={**body, "number": "+14155550101", "agent_id": other_agent["id"]},
        headers=headers,
    )  # fmt: skip
    assert (await error(response, 422, "invalid"))["path"] == "$.agent_id"
    for bad, path in [
        ({**body, "number": "14155550100"}, "$.number"),
        ({**body, "provider": "skype"}, "$.provider"),
        ({"number": "+14155550100", "provider": "sip"}, "$.agent_id"),
    ]:
        response = await api.client.post(f"{base}/numbers", json=bad, headers=headers)
        assert (await error(response, 422, "invalid"))["path"] == path

    response = await api.client.delete(f"{base}/numbers/{number['id']}", headers=headers)
    assert response.status == 204
    await error(await api.client.delete(f"{base}/numbers/{number['id']}", headers=headers), 404)
    listing = await (await api.client.get(f"{base}/numbers", headers=headers)).json()
    assert listing == {"numbers": []}


async def test_secrets(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api)
    base = f"/tenants/{tenant_id}/api/secrets"
    headers = api.bearer(key)
    value = {"account_sid": "AC123", "auth_token": "tok-very-secret"}
    response = await api.client.put(f"{base}/twilio", json=value, headers=headers)
    assert response.status == 204
    listing = await (await api.client.get(base, headers=headers)).json()
    assert [s["name"] for s in listing["secrets"]] == ["twilio"]
    assert "tok-very-secret" not in json.dumps(listing)
    # write-only: there is no route to read a value back
    await error(await api.client.get(f"{base}/twilio", headers=headers), 405)

    await error(await api.client.put(f"{base}/Bad.Name", json=value, headers=headers), 422)
    await error(await api.client.put(f"{base}/llm", json=[1, 2], headers=headers), 422)
    await error(await api.client.put(f"{base}/llm", data=b"{x", headers=headers), 400)

    assert (await api.client.delete(f"{base}/twilio", headers=headers)).status == 204
    await error(await api.client.delete(f"{base}/twilio", headers=headers), 404)
    assert await (await api.client.get(base, headers=headers)).json() == {"secrets": []}


async def test_api_keys(api: ApiServer) -> None:
    tenant_id, first_key = await new_tenant(api)
    base = f"/tenants/{tenant_id}/api/keys"
    response = await api.client.post(base, json={"label": "ci"}, headers=api.bearer(first_key))
    assert response.status == 201
    created = await response.json()
    assert created["api_key"].startswith("vg_")
    response = await api.client.post(base, headers=api.bearer(created["api_key"]))
    assert response.status == 201  # empty body: default label
    third = await response.json()

    keys = (await (await api.client.get(base, headers=api.admin())).json())["keys"]
    assert len(keys) == 3
    assert all(created["api_key"] not in json.dumps(k) for k in keys)
    labels = {k["id"]: k["label"] for k in keys}
    assert labels[created["id"]] == "ci"

    response = await api.client.delete(f"{base}/{created['id']}", headers=api.bearer(first_key))
    assert response.status == 204
    await error(await api.client.get(base, headers=api.bearer(created["api_key"])), 401)
    assert (await api.client.get(base, headers=api.bearer(third["api_key"]))).status == 200
    keys = (await (await api.client.get(base, headers=api.admin())).json())["keys"]
    assert {k["id"]: k["revoked"] for k in keys}[created["id"]] is True
    await error(await api.client.post(base, json={"label": 5}, headers=api.admin()), 422)


async def test_audit_and_quotas(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api, quotas={"max_workers": 3})
    base = f"/tenants/{tenant_id}/api"
    headers = api.bearer(key)
    await api.client.put(f"{base}/secrets/llm", json={"api_key": "x"}, headers=headers)
    await api.client.post(f"{base}/agents", json={"name": "e", "template": "echo"},
                          headers=headers)  # fmt: skip
    audit = await (await api.client.get(f"{base}/audit", headers=headers)).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions[0] == "agent.create"
    assert any(a.startswith("secret") for a in actions)
    assert any(a.startswith("tenant") for a in actions)
    assert all(e["actor"] for e in audit["entries"])
    page = await (await api.client.get(f"{base}/audit?limit=1", headers=headers)).json()
    assert len(page["entries"]) == 1
    older = await (
        await api.client.get(
            f"{base}/audit?limit=1&before={page['entries'][0]['id']}", headers=headers
        )
    ).json()
    assert older["entries"][0]["id"] != page["entries"][0]["id"]
    await error(await api.client.get(f"{base}/audit?limit=0", headers=headers), 422)
    await error(await api.client.get(f"{base}/audit?before=zz", headers=headers), 422)

    quotas = await (await api.client.get(f"{base}/quotas", headers=headers)).json()
    assert quotas["max_workers"] == 3 and quotas["max_agents"] == 20


async def test_system_status(api: ApiServer) -> None:
    tenant_id, _ = await new_tenant(api, quotas={"max_cps": 7})
    status = await (await api.client.get("/system/status", headers=api.admin())).json()
    assert status["workers"] == [] and status["calls"] == []
    # What the host really enforces on speech workers (see os_limits), never more.
    assert status["limits"]["workers"]["memory"]["enforced"] is True
    (tenant,) = status["tenants"]
    assert tenant["id"] == tenant_id and tenant["quotas"]["max_cps"] == 7
    assert tenant["live"] == {"calls": 0, "workers": 0, "calls_per_second": 0.0}

    board = api.services.status

    async def workers() -> list[WorkerStatus]:
        return [WorkerStatus(pid=42, tenant_id=tenant_id, calls=1, cpu_percent=3.5, rss_mb=80)]

    async def calls() -> list[CallStatus]:
        return [
            CallStatus(id="c1", tenant_id=tenant_id, agent_id="ag", provider="sip", started_at=1)
        ]

    board.register_workers(workers)
    board.register_calls(calls)
    board.register_counters(lambda tid: LiveCounters(calls=1, workers=1))
    status = await (await api.client.get("/system/status", headers=api.admin())).json()
    assert status["workers"][0]["pid"] == 42
    assert status["calls"][0]["id"] == "c1"
    assert status["tenants"][0]["live"]["calls"] == 1


async def test_metrics_websocket(api: ApiServer) -> None:
    await new_tenant(api)
    await error(await api.client.get("/system/metrics/ws"), 401)
    async with api.client.ws_connect("/system/metrics/ws?interval=0.05", headers=api.admin()) as ws:
        first = await ws.receive_json(timeout=10)
        second = await ws.receive_json(timeout=10)
        await ws.send_str("ignored")
        third = await ws.receive_json(timeout=10)
    for event in (first, second, third):
        assert event["type"] == "system_metrics"
        assert event["tenants"] == 1 and event["active_calls"] == 0 and event["workers"] == 0
        assert event["http"]["requests_total"] >= 2
    assert second["at"] >= first["at"]
    # browsers cannot send headers: the token may come as a query parameter
    async with api.client.ws_connect(
        f"/system/metrics/ws?interval=0.05&access_token={api.admin_token}"
    ) as ws:
        message = await ws.receive(timeout=10)
        assert message.type is WSMsgType.TEXT
    await error(await api.client.get("/system/metrics/ws?interval=0", headers=api.admin()), 422)


async def test_request_too_large(api: ApiServer) -> None:
    tenant_id, key = await new_tenant(api)
    big = {"blob": "x" * (1024 * 1024 + 10)}
    response = await api.client.put(
        f"/tenants/{tenant_id}/api/secrets/big", json=big, headers=api.bearer(key)
    )
    await error(response, 413, "too_large")
