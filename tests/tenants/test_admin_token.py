from __future__ import annotations

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.admin_token import AdminTokens
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.store import Store


async def test_generate_once_then_keep(store: Store, master_key: bytes) -> None:
    tokens = AdminTokens(store, master_key)
    generated = await tokens.ensure(None)
    assert generated is not None and generated.startswith("vga_")
    assert await tokens.ensure(None) is None  # already stored: not shown again
    assert await tokens.verify(generated)
    assert not await tokens.verify(generated + "x")
    assert not await tokens.verify("")
    stored = await store.redis.get(keyspace.system_key("admin_token"))
    assert stored is not None and generated.encode() not in stored
    # A second process with the same master key accepts the same token.
    assert await AdminTokens(store, master_key).verify(generated)


async def test_env_token_replaces_stored(store: Store, master_key: bytes) -> None:
    tokens = AdminTokens(store, master_key)
    generated = await tokens.ensure(None)
    assert generated is not None
    assert await tokens.ensure("operator-chosen-token") is None
    assert await tokens.verify("operator-chosen-token")
    assert not await tokens.verify(generated)
    with pytest.raises(InvalidInput):
        await tokens.ensure("   ")


async def test_rotate(store: Store, master_key: bytes) -> None:
    tokens = AdminTokens(store, master_key)
    assert not await tokens.verify("anything")  # nothing stored yet
    old = await tokens.ensure(None)
    assert old is not None
    new = await tokens.rotate("cli")
    assert new != old and await tokens.verify(new) and not await tokens.verify(old)
    actions = [e.action for e in await AuditLog(store).list(None)]
    assert actions == ["admin_token.rotate", "admin_token.generate"]
    assert new not in repr(await AuditLog(store).list(None))
