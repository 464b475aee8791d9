from __future__ import annotations

import re

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.apikeys import TOUCH_INTERVAL, ApiKeys
from voxgate.tenants.errors import NotFound
from voxgate.tenants.models import ApiKeyCreate, TenantCreate
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.store import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def _tenant(store: Store, master_key: bytes, name: str = "Acme") -> tuple[str, str]:
    created = await TenantRegistry(store, master_key).create(TenantCreate(name=name), "admin")
    return created.id, created.api_key


async def test_key_format_list_and_revoke(store: Store, master_key: bytes) -> None:
    tenant_id, first = await _tenant(store, master_key)
    apikeys = ApiKeys(store, master_key)
    made = await apikeys.create(tenant_id, ApiKeyCreate(label="ci"))
    assert re.fullmatch(rf"vg_{tenant_id[2:8]}_[A-Za-z0-9_-]{{32}}", made.api_key)
    assert made.id.startswith("key_")
    assert await apikeys.authenticate(made.api_key) == tenant_id
    assert await apikeys.authenticate(first) == tenant_id

    infos = await apikeys.list(tenant_id)
    assert [i.label for i in infos] == ["initial", "ci"]
    ci = infos[1]
    assert ci.prefix == made.api_key[:14] and not ci.revoked
    assert made.api_key not in repr(infos)

    await apikeys.revoke(tenant_id, made.id)
    assert await apikeys.authenticate(made.api_key) is None
    assert await apikeys.authenticate(first) == tenant_id
    assert [i.revoked for i in await apikeys.list(tenant_id)] == [False, True]
    with pytest.raises(NotFound):
        await apikeys.revoke(tenant_id, "key_missing")
    with pytest.raises(NotFound):
        await apikeys.create("t_nothere00", ApiKeyCreate())
    with pytest.raises(NotFound):
        await apikeys.list("t_nothere00")


async def test_only_keyed_hashes_are_stored(store: Store, master_key: bytes) -> None:
    _, token = await _tenant(store, master_key)
    random_part = token.split("_", 2)[2]
    async for key in store.redis.scan_iter(count=1000):
        assert random_part.encode() not in key
        if await store.redis.type(key) == b"hash":
            for field, value in (await store.redis.hgetall(key)).items():
                assert random_part.encode() not in field + value
        elif await store.redis.type(key) == b"string":
            assert random_part.encode() not in await store.redis.get(key)
    index = [k async for k in store.redis.scan_iter(match=keyspace.system_key("apikey", "*"))]
    assert len(index) == 1


async def test_authenticate_rejects_bad_tokens_without_errors(
    store: Store, master_key: bytes
) -> None:
    tenant_id, token = await _tenant(store, master_key)
    other_id, _ = await _tenant(store, master_key, "Other")
    apikeys = ApiKeys(store, master_key)
    # Same shape, wrong random part; tenant part of another tenant; garbage.
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    moved = f"vg_{other_id[2:8]}_{token.split('_', 2)[2]}"
    for bad in (
        forged,
        moved,
        "",
        "vg_",
        "vg_x_y",
        "Bearer " + token,
        token + "x",
        "é" * 50,
        "vg_" + "a" * 10_000,
    ):
        assert await apikeys.authenticate(bad) is None
    # A key checked with another master key never matches (hash under a different key).
    assert await ApiKeys(store, master_key).authenticate(token) == tenant_id


async def test_last_used_is_throttled(store: Store, master_key: bytes) -> None:
    tenant_id, token = await _tenant(store, master_key)
    clock = FakeClock()
    apikeys = ApiKeys(store, master_key, clock=clock)
    assert (await apikeys.list(tenant_id))[0].last_used_at is None
    assert await apikeys.authenticate(token) == tenant_id
    first_use = clock.now
    clock.now += TOUCH_INTERVAL / 2
    assert await apikeys.authenticate(token) == tenant_id
    assert (await apikeys.list(tenant_id))[0].last_used_at == first_use
    clock.now += TOUCH_INTERVAL
    assert await apikeys.authenticate(token) == tenant_id
    assert (await apikeys.list(tenant_id))[0].last_used_at == clock.now
