from __future__ import annotations

import pytest

from voxgate.tenants.agents import AgentStore
from voxgate.tenants.errors import Conflict, InvalidInput, NotFound
from voxgate.tenants.models import NumberCreate, TenantCreate
from voxgate.tenants.numbers import Numbers, normalize_number
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.store import Store


async def _tenant_with_agent(store: Store, master_key: bytes, name: str) -> tuple[str, str]:
    tenant_id = (await TenantRegistry(store, master_key).create(TenantCreate(name=name), "a")).id
    agent = await AgentStore(store).create(tenant_id, "Echo", "echo", "echo", None, [])
    return tenant_id, agent.id


def test_normalize_number() -> None:
    assert normalize_number("+14155550100") == "+14155550100"
    assert normalize_number(" 14155550100 ") == "+14155550100"
    for bad in ("", "+", "+0123456789", "+1234", "abc", "+1415555010012345", "++1415555"):
        assert normalize_number(bad) is None


async def test_number_crud_and_lookup(store: Store, master_key: bytes) -> None:
    tenant_id, agent_id = await _tenant_with_agent(store, master_key, "A")
    numbers = Numbers(store)
    made = await numbers.create(
        tenant_id, NumberCreate(number="+14155550100", provider="twilio", agent_id=agent_id)
    )
    assert made.id.startswith("num_") and made.agent_id == agent_id
    assert await numbers.list(tenant_id) == [made]
    for form in ("+14155550100", "14155550100"):
        assert await numbers.lookup(form) == (tenant_id, made)
    assert await numbers.lookup("+14155550101") is None
    assert await numbers.lookup("garbage") is None

    await numbers.delete(tenant_id, made.id)
    assert await numbers.list(tenant_id) == []
    assert await numbers.lookup("+14155550100") is None
    with pytest.raises(NotFound):
        await numbers.delete(tenant_id, made.id)
    # Freed numbers can be claimed again.
    again = await numbers.create(
        tenant_id, NumberCreate(number="+14155550100", provider="sip", agent_id=agent_id)
    )
    assert await numbers.lookup("14155550100") == (tenant_id, again)


async def test_number_belongs_to_one_tenant(store: Store, master_key: bytes) -> None:
    a, agent_a = await _tenant_with_agent(store, master_key, "A")
    b, agent_b = await _tenant_with_agent(store, master_key, "B")
    numbers = Numbers(store)
    made = await numbers.create(
        a, NumberCreate(number="+442071838750", provider="sip", agent_id=agent_a)
    )
    for tenant_id, agent_id in ((b, agent_b), (a, agent_a)):
        with pytest.raises(Conflict):
            await numbers.create(
                tenant_id, NumberCreate(number="+442071838750", provider="sip", agent_id=agent_id)
            )
    # Another tenant cannot delete (or even see) A's number.
    with pytest.raises(NotFound):
        await numbers.delete(b, made.id)
    assert await numbers.list(b) == []
    assert await numbers.lookup("+442071838750") == (a, made)


async def test_number_validation(store: Store, master_key: bytes) -> None:
    tenant_id, agent_id = await _tenant_with_agent(store, master_key, "A")
    numbers = Numbers(store)
    with pytest.raises(InvalidInput) as info:
        await numbers.create(
            tenant_id, NumberCreate(number="4155550100", provider="sip", agent_id=agent_id)
        )
    assert info.value.path == "$.number"
    with pytest.raises(InvalidInput) as info:
        await numbers.create(
            tenant_id, NumberCreate(number="+14155550100", provider="sip", agent_id="ag_nope")
        )
    assert info.value.path == "$.agent_id"
    with pytest.raises(NotFound):
        await numbers.create(
            "t_nothere00", NumberCreate(number="+14155550100", provider="sip", agent_id=agent_id)
        )
    assert await numbers.lookup("+14155550100") is None
