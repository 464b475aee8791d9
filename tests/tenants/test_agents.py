from __future__ import annotations

import pytest

from voxgate.tenants.agents import AgentStore, flow_hash
from voxgate.tenants.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from voxgate.tenants.models import NumberCreate, QuotasPatch, TenantCreate, TenantUpdate
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.store import Store

FLOW_V1 = {"schema": "flowspec/1", "id": "f", "nodes": [{"id": "start", "type": "say"}]}
FLOW_V2 = {"schema": "flowspec/1", "id": "f", "nodes": [{"id": "start", "type": "hangup"}]}


async def _tenant(store: Store, master_key: bytes) -> str:
    return (await TenantRegistry(store, master_key).create(TenantCreate(name="A"), "admin")).id


async def test_agent_crud_and_versions(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    agents = AgentStore(store)
    agent = await agents.create(tenant_id, "Reception", "flow", "demo-receptionist", FLOW_V1, ["w"])
    assert agent.id.startswith("ag_") and agent.version == 1 and agent.warnings == ["w"]
    assert await agents.get(tenant_id, agent.id) == agent
    echo = await agents.create(tenant_id, "Echo", "echo", "echo", None, [])
    assert [a.id for a in await agents.list(tenant_id)] == [agent.id, echo.id]

    renamed = await agents.update(tenant_id, agent.id, name="Front desk")
    assert (renamed.name, renamed.version) == ("Front desk", 1)
    same_flow = await agents.update(tenant_id, agent.id, flow=dict(reversed(FLOW_V1.items())))
    assert same_flow.version == 1  # key order does not make a new version
    changed = await agents.update(tenant_id, agent.id, flow=FLOW_V2, warnings=[])
    assert (changed.version, changed.flow, changed.warnings) == (2, FLOW_V2, [])

    versions = await agents.versions(tenant_id, agent.id)
    assert [(v.version, v.flow_hash) for v in versions] == [
        (1, flow_hash(FLOW_V1)),
        (2, flow_hash(FLOW_V2)),
    ]
    assert await agents.flow_at(tenant_id, agent.id, 1) == FLOW_V1
    assert await agents.flow_at(tenant_id, agent.id, 2) == FLOW_V2
    with pytest.raises(NotFound):
        await agents.flow_at(tenant_id, agent.id, 3)

    await agents.delete(tenant_id, agent.id)
    with pytest.raises(NotFound):
        await agents.get(tenant_id, agent.id)
    with pytest.raises(NotFound):
        await agents.delete(tenant_id, agent.id)
    with pytest.raises(NotFound):
        await agents.update(tenant_id, agent.id, name="x")
    with pytest.raises(NotFound):
        await agents.versions(tenant_id, agent.id)
    with pytest.raises(NotFound):
        await agents.get("t_nothere00", echo.id)


async def test_agent_quota(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    registry = TenantRegistry(store, master_key)
    await registry.update(tenant_id, TenantUpdate(quotas=QuotasPatch(max_agents=2)), "admin")
    agents = AgentStore(store)
    first = await agents.create(tenant_id, "1", "echo", "echo", None, [])
    await agents.create(tenant_id, "2", "echo", "echo", None, [])
    with pytest.raises(QuotaExceeded):
        await agents.create(tenant_id, "3", "echo", "echo", None, [])
    await agents.delete(tenant_id, first.id)
    await agents.create(tenant_id, "3", "echo", "echo", None, [])
    with pytest.raises(NotFound):
        await agents.create("t_nothere00", "x", "echo", "echo", None, [])


async def test_agent_validation_and_routed_delete(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    agents = AgentStore(store)
    with pytest.raises(InvalidInput) as info:
        await agents.create(tenant_id, "", "echo", "echo", None, [])
    assert info.value.path == "$.name"
    with pytest.raises(InvalidInput) as info:
        await agents.create(tenant_id, "x", "robot", None, None, [])
    assert info.value.path == "$.kind"
    agent = await agents.create(tenant_id, "Echo", "echo", "echo", None, [])
    await Numbers(store).create(
        tenant_id, NumberCreate(number="+14155550100", provider="sip", agent_id=agent.id)
    )
    with pytest.raises(Conflict):
        await agents.delete(tenant_id, agent.id)
    assert (await agents.get(tenant_id, agent.id)).id == agent.id
