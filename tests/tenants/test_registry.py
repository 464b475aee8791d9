from __future__ import annotations

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.agents import AgentStore
from voxgate.tenants.apikeys import ApiKeys
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.models import (
    ApiKeyCreate,
    NumberCreate,
    Quotas,
    QuotasPatch,
    TenantCreate,
    TenantUpdate,
)
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.secrets import SecretVault
from voxgate.tenants.store import Store


async def _keys(store: Store, pattern: str) -> list[bytes]:
    return [k async for k in store.redis.scan_iter(match=pattern, count=1000)]


async def test_tenant_crud(store: Store, master_key: bytes) -> None:
    registry = TenantRegistry(store, master_key)
    created = await registry.create(TenantCreate(name="Acme", quotas=Quotas(max_cps=7)), "admin")
    assert created.id.startswith("t_") and len(created.id) == 12
    assert created.api_key.startswith(f"vg_{created.id[2:8]}_")

    tenant = await registry.get(created.id)
    assert (tenant.name, tenant.status, tenant.quotas.max_cps) == ("Acme", "active", 7)
    assert tenant.quotas.max_agents == 20
    other = await registry.create(TenantCreate(name="Beta"), "admin")
    assert [t.id for t in await registry.list()] == [created.id, other.id]

    updated = await registry.update(
        created.id, TenantUpdate(name="Acme 2", quotas=QuotasPatch(max_agents=3)), "admin"
    )
    assert (updated.name, updated.quotas.max_agents, updated.quotas.max_cps) == ("Acme 2", 3, 7)
    assert (await registry.get(created.id)).quotas.max_agents == 3

    assert (await registry.suspend(created.id, "admin")).status == "suspended"
    assert (await registry.resume(created.id, "admin")).status == "active"

    actions = [e.action for e in await AuditLog(store).list(created.id)]
    assert actions[:4] == ["tenant.resume", "tenant.suspend", "tenant.update", "apikey.create"]
    assert "tenant.create" in actions

    for missing in ("t_nothere00", "BAD ID", "../x"):
        with pytest.raises(NotFound):
            await registry.get(missing)
    with pytest.raises(NotFound):
        await registry.update("t_nothere00", TenantUpdate(name="x"), "admin")


async def test_invalid_input_names_the_field(store: Store, master_key: bytes) -> None:
    registry = TenantRegistry(store, master_key)
    with pytest.raises(InvalidInput) as info:
        await registry.create(TenantCreate(name="x", quotas=Quotas(max_cps=0)), "admin")
    assert info.value.path == "$.quotas.max_cps"
    with pytest.raises(InvalidInput) as info:
        await registry.create(TenantCreate(name=""), "admin")
    assert info.value.path == "$.name"
    created = await registry.create(TenantCreate(name="ok"), "admin")
    with pytest.raises(InvalidInput) as info:
        await registry.update(created.id, TenantUpdate(quotas=QuotasPatch(memory_mb=1)), "admin")
    assert info.value.path == "$.quotas.memory_mb"
    assert await registry.list() != []


async def test_suspend_blocks_keys_immediately(store: Store, master_key: bytes) -> None:
    registry = TenantRegistry(store, master_key)
    apikeys = ApiKeys(store, master_key)
    created = await registry.create(TenantCreate(name="Acme"), "admin")
    assert await apikeys.authenticate(created.api_key) == created.id
    await registry.suspend(created.id, "admin")
    assert await apikeys.authenticate(created.api_key) is None
    await registry.resume(created.id, "admin")
    assert await apikeys.authenticate(created.api_key) == created.id


async def test_delete_removes_every_key_and_global_index(store: Store, master_key: bytes) -> None:
    registry = TenantRegistry(store, master_key)
    keep = await registry.create(TenantCreate(name="Keep"), "admin")
    gone = await registry.create(TenantCreate(name="Gone"), "admin")
    agents, numbers = AgentStore(store), Numbers(store)
    for tenant_id, e164 in ((keep.id, "+14155550100"), (gone.id, "+14155550199")):
        agent = await agents.create(tenant_id, "A", "echo", "echo", None, [])
        await numbers.create(
            tenant_id, NumberCreate(number=e164, provider="sip", agent_id=agent.id)
        )
        await SecretVault(store, master_key).put(tenant_id, "twilio", {"auth_token": "x"})
        await ApiKeys(store, master_key).create(tenant_id, ApiKeyCreate(label="second"))
    before_keep = sorted(await _keys(store, keyspace.tenant_pattern(keep.id)))
    assert len(await _keys(store, keyspace.tenant_pattern(gone.id))) > 5

    await registry.delete(gone.id, "admin")

    assert await _keys(store, keyspace.tenant_pattern(gone.id)) == []
    remaining = [k.decode() for k in await _keys(store, "*")]
    assert not [k for k in remaining if gone.id in k]
    assert await numbers.lookup("+14155550199") is None
    assert await ApiKeys(store, master_key).authenticate(gone.api_key) is None
    # System index entries of the deleted tenant are gone; the other tenant's stay.
    apikey_index = [k for k in remaining if k.startswith(keyspace.system_key("apikey", ""))]
    assert len(apikey_index) == 2
    assert sorted(await _keys(store, keyspace.tenant_pattern(keep.id))) == before_keep
    assert (await numbers.lookup("14155550100")) is not None
    assert [t.id for t in await registry.list()] == [keep.id]
    with pytest.raises(NotFound):
        await registry.get(gone.id)
    with pytest.raises(NotFound):
        await registry.delete(gone.id, "admin")
    system_audit = await AuditLog(store).list(None)
    assert system_audit[0].action == "tenant.delete" and system_audit[0].target == gone.id
