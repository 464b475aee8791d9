"""Tenant isolation over every route the app serves, found in its own /openapi.json.

Tenant A's key is tried on every path and method with tenant B's real ids
substituted, so a route added later is covered without touching this file.
A path parameter this file does not know yet (e.g. ``{call_id}``) gets a
placeholder value: the tenant-level check still applies to it, but the route
is only fully exercised once ``populate_b`` creates a real B object for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.conftest import ApiServer
from tests.server.test_api import FLOW
from voxgate.tenants.calls import CallRecord, CallRecords


@dataclass
class TenantB:
    """Everything B owns, with the strings that must never reach A."""

    values: dict[str, str]  # path parameter -> B's real value
    markers: set[str]
    snapshot: dict[str, Any]


async def make_tenant(api: ApiServer, name: str) -> tuple[str, str]:
    response = await api.client.post("/system/tenants", json={"name": name}, headers=api.admin())
    assert response.status == 201
    body = await response.json()
    return body["id"], body["api_key"]


async def snapshot(api: ApiServer, tenant_id: str) -> dict[str, Any]:
    """B's state as the admin sees it (volatile fields dropped)."""
    state: dict[str, Any] = {}
    base = f"/tenants/{tenant_id}/api"
    for part in ("agents", "numbers", "secrets", "keys", "quotas"):
        response = await api.client.get(f"{base}/{part}", headers=api.admin())
        assert response.status == 200
        state[part] = await response.json()
    for key in state["keys"]["keys"]:
        key.pop("last_used_at")
    tenant = await api.client.get(f"/system/tenants/{tenant_id}", headers=api.admin())
    state["tenant"] = await tenant.json()
    return state


async def populate_b(api: ApiServer) -> TenantB:
    tenant_id, key = await make_tenant(api, "bravo-corp-7f3k")
    headers = api.bearer(key)
    base = f"/tenants/{tenant_id}/api"
    agent = await (
        await api.client.post(
            f"{base}/agents", json={"name": "bravo-agent-q9z", "flow": FLOW}, headers=headers
        )
    ).json()
    echo = await (
        await api.client.post(
            f"{base}/agents", json={"name": "bravo-echo-w2x", "template": "echo"}, headers=headers
        )
    ).json()
    number = await (
        await api.client.post(
            f"{base}/numbers",
            json={"number": "+19995550123", "provider": "sip", "agent_id": agent["id"]},
            headers=headers,
        )
    ).json()
    secret = "bravo-secret-k4v"
    response = await api.client.put(
        f"{base}/secrets/{secret}", json={"token": "bravo-value-p8m"}, headers=headers
    )
    assert response.status == 204
    extra_key = await (
        await api.client.post(f"{base}/keys", json={"label": "bravo-label-r5t"}, headers=headers)
    ).json()
    # A real call of B's, so the {call_id} routes are walked with an id that exists.
    call_id = "CA" + "b7" * 16
    await CallRecords(api.services.store).create(
        CallRecord(
            id=call_id,
            tenant_id=tenant_id,
            agent_id=echo["id"],
            provider="twilio",
            from_number="+19995550777",
            to_number="+19995550123",
            status="completed",
            created_at=1_700_000_000.0,
        )
    )
    values = {
        "tenant_id": tenant_id,
        "agent_id": agent["id"],
        "number_id": number["id"],
        "key_id": extra_key["id"],
        "call_id": call_id,
        "name": secret,
        "provider": "twilio",
    }
    markers = {
        call_id,
        "19995550777",
        tenant_id,
        agent["id"],
        echo["id"],
        number["id"],
        extra_key["id"],
        secret,
        "bravo-corp-7f3k",
        "bravo-agent-q9z",
        "bravo-echo-w2x",
        "+19995550123",
        "19995550123",
        "bravo-value-p8m",
        "bravo-label-r5t",
        key,
        extra_key["api_key"],
        key[:12],
    }
    return TenantB(values=values, markers=markers, snapshot=await snapshot(api, tenant_id))


def fill(path: str, values: dict[str, str]) -> str:
    out = path
    for name in _params(path):
        out = out.replace("{" + name + "}", values.get(name, f"b-{name}-placeholder"))
    return out


def _params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


async def call(
    api: ApiServer, method: str, url: str, operation: dict[str, Any], headers: dict[str, str]
) -> tuple[int, str]:
    kwargs: dict[str, Any] = {"headers": headers}
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        kwargs["json"] = {}
    elif "application/x-www-form-urlencoded" in content:
        kwargs["data"] = {}
    async with api.client.request(method.upper(), url, **kwargs) as response:
        return response.status, await response.text()


def leaked(text: str, markers: set[str]) -> set[str]:
    return {marker for marker in markers if marker in text}


async def test_tenant_a_never_reaches_tenant_b(api: ApiServer) -> None:
    a_id, a_key = await make_tenant(api, "alpha-corp")
    b = await populate_b(api)
    document = await (await api.client.get("/openapi.json")).json()
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 25
    checked = 0

    for path, method, operation in operations:
        auth = operation["x-voxgate-auth"]
        url = fill(path, b.values)
        status, text = await call(api, method, url, operation, api.bearer(a_key))
        where = f"{method.upper()} {url} -> {status}"
        assert status < 500, where
        assert not leaked(text, b.markers), f"{where} leaked {leaked(text, b.markers)}"
        if auth != "public":
            assert status in (401, 403, 404), where
            for headers in ({}, api.bearer("vg_bogus_key"), api.bearer(a_key + "x")):
                status, text = await call(api, method, url, operation, headers)
                assert status == 401, f"{method.upper()} {url} with {headers} -> {status}"
                assert not leaked(text, b.markers)
        checked += 1

        # A's own tenant path with B's object ids: nothing of B, and no object found.
        if "tenant_id" in _params(path) and auth == "tenant":
            own = fill(path, {**b.values, "tenant_id": a_id})
            status, text = await call(api, method, own, operation, api.bearer(a_key))
            where = f"{method.upper()} {own} -> {status}"
            assert status < 500, where
            # A may write its own secret under B's secret name, so names are A's too.
            asked = {value for value in b.values.values() if value in own} | {b.values["name"]}
            assert not leaked(text, b.markers - asked), f"{where} leaked"
            if any(name.endswith("_id") and name != "tenant_id" for name in _params(path)):
                assert 400 <= status < 500, where
            checked += 1

    assert checked > len(operations)
    assert await snapshot(api, b.values["tenant_id"]) == b.snapshot, "B's data changed"


async def test_listings_show_only_own_data(api: ApiServer) -> None:
    a_id, a_key = await make_tenant(api, "alpha-corp")
    b = await populate_b(api)
    for part in ("agents", "numbers", "secrets", "keys", "audit", "quotas", "templates"):
        response = await api.client.get(f"/tenants/{a_id}/api/{part}", headers=api.bearer(a_key))
        assert response.status == 200
        text = await response.text()
        assert not leaked(text, b.markers), (part, leaked(text, b.markers))
        json.loads(text)
