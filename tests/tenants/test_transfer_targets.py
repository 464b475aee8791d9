from __future__ import annotations

import pytest

from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.models import TenantCreate
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.store import Store
from voxgate.tenants.transfer_targets import (
    TransferTargets,
    TransferTargetStore,
    UnknownTransferTarget,
    is_number,
)


async def _tenant(store: Store, master_key: bytes) -> str:
    return (await TenantRegistry(store, master_key).create(TenantCreate(name="A"), "a")).id


def test_numbers_and_names_are_told_apart() -> None:
    assert is_number("+14155550100") and is_number("4155550100") and is_number("+1 (415) 555")
    assert not is_number("operator") and not is_number("+") and not is_number("sales-1")


async def test_put_get_resolve_audited(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    targets = TransferTargetStore(store)
    assert (await targets.get(tenant_id)).targets == {}
    with pytest.raises(UnknownTransferTarget):
        await targets.resolve(tenant_id, "operator")
    stored = await targets.put(
        tenant_id, TransferTargets(targets={"operator": "+14155550100"}), "apikey"
    )
    assert stored.targets == {"operator": "+14155550100"}
    assert await targets.resolve(tenant_id, "operator") == "+14155550100"
    assert await targets.resolve(tenant_id, " operator ") == "+14155550100"
    # A number passes through untouched: the dial policy normalises and judges it.
    assert await targets.resolve(tenant_id, "+19005550100") == "+19005550100"
    with pytest.raises(UnknownTransferTarget):
        await targets.resolve(tenant_id, "Operator!")
    with pytest.raises(UnknownTransferTarget):
        await targets.resolve(tenant_id, "billing")
    entry = (await AuditLog(store).list(tenant_id))[0]
    assert entry.action == "transfer_targets.put" and entry.detail["names"] == "operator"


async def test_validation_and_isolation(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    other = await _tenant(store, master_key)
    targets = TransferTargetStore(store)
    with pytest.raises(InvalidInput):
        await targets.put(tenant_id, TransferTargets(targets={"operator": "0800 1234"}))
    with pytest.raises(InvalidInput):
        await targets.put(tenant_id, TransferTargets(targets={"Bad Name": "+14155550100"}))
    await targets.put(tenant_id, TransferTargets(targets={"operator": "+14155550100"}))
    assert (await targets.get(other)).targets == {}
    with pytest.raises(UnknownTransferTarget):
        await targets.resolve(other, "operator")
    with pytest.raises(NotFound):
        await targets.get("t_missing")
    with pytest.raises(NotFound):
        await targets.get("BAD ID")
