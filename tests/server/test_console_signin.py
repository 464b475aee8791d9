"""One-time console sign-in codes: issued hashed with a TTL, redeemed once for a tenant key."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from tests.conftest import ApiServer
from voxgate.server.console_signin import SIGNIN_KEY_LABEL, issue_signin_code
from voxgate.tenants.errors import NotFound
from voxgate.tenants.store import to_bytes


async def _tenant(api: ApiServer, name: str) -> tuple[str, str]:
    response = await api.client.post("/system/tenants", json={"name": name}, headers=api.admin())
    assert response.status == 201
    created = await response.json()
    return created["id"], created["api_key"]


async def _redeem(api: ApiServer, code: str) -> tuple[int, dict[str, object]]:
    response = await api.client.post("/console/signin", json={"code": code})
    return response.status, await response.json()


async def test_a_code_signs_in_once(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Signin Dental")
    code = await issue_signin_code(api.services, tenant_id)
    status, body = await _redeem(api, code)
    assert status == 200, body
    assert body["tenant_id"] == tenant_id
    token = str(body["token"])
    quotas = await api.client.get(f"/tenants/{tenant_id}/api/quotas", headers=api.bearer(token))
    assert quotas.status == 200
    # The same code again: refused, and the key it gave stays the only one issued.
    status, body = await _redeem(api, code)
    assert status == 401
    assert body == {
        "error": {
            "code": "invalid_signin_code",
            "message": "this sign-in link is unknown, already used or expired",
        }
    }
    keys = await api.services.apikeys.list(tenant_id)
    assert [k.label for k in keys].count(SIGNIN_KEY_LABEL) == 1


async def test_concurrent_redemptions_give_one_key(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Race Dental")
    code = await issue_signin_code(api.services, tenant_id)
    results = await asyncio.gather(*(_redeem(api, code) for _ in range(5)))
    assert sorted(status for status, _ in results) == [200, 401, 401, 401, 401]


async def test_wrong_and_malformed_codes(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Wrong Dental")
    code = await issue_signin_code(api.services, tenant_id)
    for wrong in (code[:-1], code + "x", "x" * 43, code.upper()):
        status, body = await _redeem(api, wrong)
        assert status == 401, wrong
        assert isinstance(body["error"], dict) and body["error"]["code"] == "invalid_signin_code"
    missing = await api.client.post("/console/signin", json={})
    assert missing.status == 422
    too_long = await api.client.post("/console/signin", json={"code": "a" * 129})
    assert too_long.status == 422
    # The wrong guesses did not use the real code up.
    status, _ = await _redeem(api, code)
    assert status == 200


async def test_an_expired_code_is_refused(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Expiry Dental")
    code = await issue_signin_code(api.services, tenant_id, ttl=600)
    redis = api.services.store.redis
    digest = hashlib.sha256(code.encode()).hexdigest()
    ttl_ms = await redis.pttl(f"vg:sys:console_signin:{digest}")
    assert 590_000 < ttl_ms <= 600_000
    # Expiry itself is Redis's: a short TTL, then wait (bounded) for Redis to drop the key.
    short = await issue_signin_code(api.services, tenant_id, ttl=0.05)
    short_key = f"vg:sys:console_signin:{hashlib.sha256(short.encode()).hexdigest()}"
    async with asyncio.timeout(5):
        while await redis.exists(short_key):  # noqa: ASYNC110 (Redis has no expiry event here)
            await asyncio.sleep(0.02)
    status, _ = await _redeem(api, short)
    assert status == 401


async def test_the_code_is_never_stored_in_plaintext(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Plain Dental")
    code = await issue_signin_code(api.services, tenant_id)
    redis = api.services.store.redis
    keys = [to_bytes(k) for k in await redis.keys("*")]
    digest = hashlib.sha256(code.encode()).hexdigest()
    assert f"vg:sys:console_signin:{digest}".encode() in keys
    needle = code.encode()
    for key in keys:
        assert needle not in key
        kind = to_bytes(await redis.type(key)).decode()
        if kind == "string":
            assert needle not in to_bytes(await redis.get(key))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                assert needle not in to_bytes(field) + to_bytes(value)
        elif kind == "list":
            assert all(needle not in to_bytes(v) for v in await redis.lrange(key, 0, -1))
    assert to_bytes(await redis.get(f"vg:sys:console_signin:{digest}")).decode() == tenant_id


async def test_the_key_works_only_on_its_tenant(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Own Dental")
    other_id, _other_key = await _tenant(api, "Other Dental")
    status, body = await _redeem(api, await issue_signin_code(api.services, tenant_id))
    assert status == 200
    headers = api.bearer(str(body["token"]))
    assert (await api.client.get(f"/tenants/{tenant_id}/api/agents", headers=headers)).status == 200
    assert (await api.client.get(f"/tenants/{other_id}/api/agents", headers=headers)).status == 404
    assert (await api.client.get("/system/tenants", headers=headers)).status == 403


async def test_a_new_sign_in_revokes_the_previous_console_key(api: ApiServer) -> None:
    tenant_id, key = await _tenant(api, "Again Dental")
    _, first = await _redeem(api, await issue_signin_code(api.services, tenant_id))
    _, second = await _redeem(api, await issue_signin_code(api.services, tenant_id))
    path = f"/tenants/{tenant_id}/api/quotas"
    old = await api.client.get(path, headers=api.bearer(str(first["token"])))
    assert old.status == 401
    new = await api.client.get(path, headers=api.bearer(str(second["token"])))
    assert new.status == 200
    # Keys made otherwise (the tenant's own key here) are left alone.
    assert (await api.client.get(path, headers=api.bearer(key))).status == 200
    labels = {(k.label, k.revoked) for k in await api.services.apikeys.list(tenant_id)}
    assert labels == {("initial", False), (SIGNIN_KEY_LABEL, True), (SIGNIN_KEY_LABEL, False)}


async def test_a_suspended_or_deleted_tenant_gets_no_key(api: ApiServer) -> None:
    tenant_id, _key = await _tenant(api, "Gone Dental")
    suspended_code = await issue_signin_code(api.services, tenant_id)
    deleted_code = await issue_signin_code(api.services, tenant_id)
    await api.services.registry.suspend(tenant_id, "test")
    status, body = await _redeem(api, suspended_code)
    assert status == 403, body
    response = await api.client.delete(f"/system/tenants/{tenant_id}", headers=api.admin())
    assert response.status == 204
    status, _ = await _redeem(api, deleted_code)
    assert status == 401


async def test_issuing_checks_its_input(api: ApiServer) -> None:
    with pytest.raises(NotFound):
        await issue_signin_code(api.services, "t_nosuchtenant")
    tenant_id, _key = await _tenant(api, "Input Dental")
    with pytest.raises(ValueError):
        await issue_signin_code(api.services, tenant_id, ttl=0)
    first = await issue_signin_code(api.services, tenant_id)
    second = await issue_signin_code(api.services, tenant_id)
    assert first != second and len(first) >= 43


async def test_the_route_is_public_and_in_openapi(api: ApiServer) -> None:
    document = await (await api.client.get("/openapi.json")).json()
    operation = document["paths"]["/console/signin"]["post"]
    assert "security" not in operation or operation["security"] == []
    # The console's client routes still fall back to index.html for GET.
    page = await api.client.get("/console/signin")
    assert page.status == 200 and page.content_type == "text/html"
