"""HTTP contract: health, metrics, OpenAPI, super-admin and tenant API shapes, isolation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.contract.conftest import Served, assert_error, bearer, call_api

# The flow of the contract's example, verbatim.
FRONT_DESK: dict[str, Any] = json.loads(
    (Path(__file__).parent / "front_desk.flow.json").read_text()
)


class Api:
    """The shared server plus a client session."""

    def __init__(self, served: Served, session: aiohttp.ClientSession) -> None:
        self.served = served
        self.session = session
        self.admin = served.ready["admin_token"]

    async def __call__(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        return await call_api(self.session, method, self.served.http + path, token, body)

    async def tenant(self, name: str) -> tuple[str, str]:
        status, body = await self("POST", "/system/tenants", self.admin, {"name": name})
        assert status == 201, body
        return body["id"], body["api_key"]


@pytest.fixture
async def api(server: Served) -> Any:
    async with aiohttp.ClientSession() as session:
        yield Api(server, session)


async def test_health_metrics_openapi(api: Api) -> None:
    assert await api("GET", "/healthz") == (200, {"status": "ok"})
    async with api.session.get(api.served.http + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert "# TYPE" in await response.text()
    status, doc = await api("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    have = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    t = "/tenants/{tenant_id}/api"
    for needed in [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/system/tenants"),
        ("GET", "/system/status"),
        ("GET", "/system/metrics/ws"),
        ("GET", f"{t}/agents"),
        ("POST", f"{t}/agents"),
        ("GET", f"{t}/templates"),
        ("GET", f"{t}/numbers"),
        ("POST", f"{t}/numbers"),
        ("DELETE", f"{t}/numbers/{{number_id}}"),
        ("GET", f"{t}/secrets"),
        ("PUT", f"{t}/secrets/{{name}}"),
        ("GET", f"{t}/calls"),
        ("GET", f"{t}/calls/{{call_id}}"),
        ("GET", f"{t}/analytics/ws"),
        ("POST", "/twilio/webhook"),
        ("GET", "/twilio/media"),
    ]:
        assert needed in have, f"{needed} missing from /openapi.json"
    # Agents are CRUD: the item path has read, update and delete.
    item = {m for m, p in have if p == f"{t}/agents/{{agent_id}}"}
    assert {"GET", "DELETE"} <= item and item & {"PUT", "PATCH"}


async def test_create_tenant_and_status_shape(api: Api) -> None:
    status, created = await api("POST", "/system/tenants", api.admin, {"name": "Status Co"})
    assert status == 201
    assert isinstance(created["id"], str) and isinstance(created["api_key"], str)
    status, view = await api(
        "POST", "/system/tenants", api.admin, {"name": "Quota Co", "quotas": {}}
    )
    assert status == 201, view
    status, view = await api("GET", "/system/status", api.admin)
    assert status == 200
    assert isinstance(view["tenants"], list) and isinstance(view["workers"], list)
    assert isinstance(view["calls"], list)
    assert created["id"] in json.dumps(view["tenants"])
    for worker in view["workers"]:
        assert {"pid", "tenant_id", "calls", "cpu_percent", "rss_mb"} <= set(worker)
    for live in view["calls"]:
        assert {"id", "tenant_id", "agent_id", "provider", "started_at"} <= set(live)


async def test_admin_routes_refuse_others(api: Api) -> None:
    _, key = await api.tenant("Not Admin")
    for token, expected in ((None, 401), ("vga_wrong", 401), (key, 403)):
        status, body = await api("GET", "/system/status", token)
        assert_error(status, body, expected)
        status, body = await api("POST", "/system/tenants", token, {"name": "x"})
        assert_error(status, body, expected)


async def test_system_metrics_ws(api: Api) -> None:
    url = api.served.ws + "/system/metrics/ws"
    async with api.session.ws_connect(url, headers=bearer(api.admin)) as ws:
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT
        assert isinstance(json.loads(message.data), dict)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.session.ws_connect(url)
    assert refused.value.status == 401


async def test_agents_templates_and_flow(api: Api) -> None:
    tenant, key = await api.tenant("Agents Co")
    base = f"/tenants/{tenant}/api"
    status, listing = await api("GET", f"{base}/templates", key)
    assert status == 200
    names = {entry["name"] for entry in listing["templates"]}
    assert {"demo-receptionist", "echo"} <= names

    for template in ("echo", "demo-receptionist"):
        status, agent = await api(
            "POST", f"{base}/agents", key, {"name": f"From {template}", "template": template}
        )
        assert status == 201, agent
        assert agent["name"] == f"From {template}" and agent["id"]
        assert agent["template"] == template
        status, again = await api("GET", f"{base}/agents/{agent['id']}", key)
        assert status == 200 and again["id"] == agent["id"]

    status, flow_agent = await api(
        "POST", f"{base}/agents", key, {"name": "Front desk", "flow": FRONT_DESK}
    )
    assert status == 201, flow_agent
    assert flow_agent["name"] == "Front desk" and flow_agent["id"]
    status, listing = await api("GET", f"{base}/agents", key)
    assert status == 200
    assert flow_agent["id"] in {entry["id"] for entry in listing["agents"]}

    # A flow edge to a missing node is refused with a typed error, not stored.
    broken = copy.deepcopy(FRONT_DESK)
    broken["edges"][0]["target"] = "nowhere"
    status, body = await api("POST", f"{base}/agents", key, {"name": "Bad", "flow": broken})
    assert_error(status, body, 422)
    status, body = await api(
        "POST", f"{base}/agents", key, {"name": "Bad", "template": "no-such-template"}
    )
    assert 400 <= status < 500
    assert_error(status, body, status)

    status, _ = await api("DELETE", f"{base}/agents/{flow_agent['id']}", key)
    assert status in (200, 204)
    status, body = await api("GET", f"{base}/agents/{flow_agent['id']}", key)
    assert_error(status, body, 404)


async def test_numbers_create_list_delete(api: Api) -> None:
    tenant, key = await api.tenant("Numbers Co")
    base = f"/tenants/{tenant}/api"
    _, agent = await api("POST", f"{base}/agents", key, {"name": "E", "template": "echo"})
    created = []
    for number, provider in (("+15550100001", "twilio"), ("+15550100002", "sip")):
        body = {"number": number, "provider": provider, "agent_id": agent["id"]}
        status, entry = await api("POST", f"{base}/numbers", key, body)
        assert status == 201, entry
        assert {k: entry[k] for k in ("number", "provider", "agent_id")} == body
        assert entry["id"]
        created.append(entry)
    status, listing = await api("GET", f"{base}/numbers", key)
    assert status == 200
    assert {e["id"] for e in created} <= {e["id"] for e in listing["numbers"]}
    status, _ = await api("DELETE", f"{base}/numbers/{created[0]['id']}", key)
    assert status in (200, 204)
    _, listing = await api("GET", f"{base}/numbers", key)
    assert created[0]["id"] not in {e["id"] for e in listing["numbers"]}
    status, body = await api(
        "POST", f"{base}/numbers", key,
        {"number": "not-a-number", "provider": "twilio", "agent_id": agent["id"]},
    )  # fmt: skip
    assert_error(status, body, 422)


async def test_secrets_write_only(api: Api) -> None:
    tenant, key = await api.tenant("Secrets Co")
    base = f"/tenants/{tenant}/api/secrets"
    value = {"account_sid": "AC" + "1" * 32, "auth_token": "marker-secret-value-31337"}
    status, _ = await api("PUT", f"{base}/twilio", key, value)
    assert status in (200, 201, 204)
    for name in ("a", "a" * 64, "llm_key-2"):
        status, _ = await api("PUT", f"{base}/{name}", key, {"k": "v"})
        assert status in (200, 201, 204), name
    for name in ("a" * 65, "Upper", "dot.name"):
        status, body = await api("PUT", f"{base}/{name}", key, {"k": "v"})
        assert 400 <= status < 500, name
        assert_error(status, body, status)
    status, listing = await api("GET", base, key)
    assert status == 200
    assert set(listing) == {"secrets"}
    entries = {entry["name"]: entry for entry in listing["secrets"]}
    assert {"twilio", "a", "a" * 64, "llm_key-2"} == set(entries)
    for entry in entries.values():
        assert set(entry) == {"name", "updated_at"}
    assert "marker-secret-value" not in json.dumps(listing)
    status, body = await api("GET", f"{base}/twilio", key)
    assert status in (404, 405)  # never a value


async def test_calls_list_and_unknown_detail(api: Api) -> None:
    tenant, key = await api.tenant("Calls Co")
    status, listing = await api("GET", f"/tenants/{tenant}/api/calls", key)
    assert status == 200 and listing["calls"] == []
    status, body = await api("GET", f"/tenants/{tenant}/api/calls/CA{'0' * 32}", key)
    assert_error(status, body, 404)


async def test_tenant_key_never_reaches_another_tenant(api: Api) -> None:
    tenant_a, key_a = await api.tenant("Tenant A")
    tenant_b, key_b = await api.tenant("Tenant B")
    b = f"/tenants/{tenant_b}/api"
    _, agent_b = await api("POST", f"{b}/agents", key_b, {"name": "B agent", "template": "echo"})
    _, number_b = await api(
        "POST", f"{b}/numbers", key_b,
        {"number": "+15550100099", "provider": "twilio", "agent_id": agent_b["id"]},
    )  # fmt: skip
    await api("PUT", f"{b}/secrets/twilio", key_b, {"account_sid": "AC1", "auth_token": "t"})
    probes = [
        ("GET", f"{b}/agents", None),
        ("POST", f"{b}/agents", {"name": "x", "template": "echo"}),
        ("GET", f"{b}/agents/{agent_b['id']}", None),
        ("DELETE", f"{b}/agents/{agent_b['id']}", None),
        ("GET", f"{b}/templates", None),
        ("GET", f"{b}/numbers", None),
        ("POST", f"{b}/numbers", {"number": "+15550100098", "provider": "sip",
                                  "agent_id": agent_b["id"]}),
        ("DELETE", f"{b}/numbers/{number_b['id']}", None),
        ("GET", f"{b}/secrets", None),
        ("PUT", f"{b}/secrets/twilio", {"account_sid": "AC2", "auth_token": "x"}),
        ("GET", f"{b}/calls", None),
    ]  # fmt: skip
    for method, path, body in probes:
        status, answer = await api(method, path, key_a, body)
        assert_error(status, answer, 404)
        text = json.dumps(answer)
        assert agent_b["id"] not in text and "B agent" not in text
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.session.ws_connect(api.served.ws + f"{b}/analytics/ws", headers=bearer(key_a))
    assert refused.value.status == 404
    # B's data is untouched, and A still reaches its own tenant.
    status, listing = await api("GET", f"{b}/agents", key_b)
    assert [entry["id"] for entry in listing["agents"]] == [agent_b["id"]]
    assert (await api("GET", f"/tenants/{tenant_a}/api/agents", key_a))[0] == 200
    # The admin token works on every tenant's paths.
    assert (await api("GET", f"{b}/numbers", api.admin))[0] == 200


async def test_errors_are_json_objects(api: Api) -> None:
    tenant, key = await api.tenant("Errors Co")
    status, body = await api("GET", f"/tenants/{tenant}/api/agents")
    assert_error(status, body, 401)
    status, body = await api("GET", f"/tenants/{tenant}/api/agents", "vg_bogus_key")
    assert_error(status, body, 401)
    status, body = await api("POST", f"/tenants/{tenant}/api/agents", key, {"name": 5})
    assert_error(status, body, 422)
    async with api.session.post(
        api.served.http + f"/tenants/{tenant}/api/agents",
        data=b"{not json",
        headers={**bearer(key), "Content-Type": "application/json"},
    ) as response:
        assert_error(response.status, await response.json(), 400)
    status, body = await api("GET", "/no/such/route")
    assert_error(status, body, 404)
    status, body = await api("GET", f"/tenants/{tenant}/api/analytics/ws", key)
    assert_error(status, body, 400)  # a feed needs a WebSocket upgrade
