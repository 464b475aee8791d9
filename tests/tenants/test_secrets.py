from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.apikeys import ApiKeys
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.crypto import generate_master_key
from voxgate.tenants.errors import CryptoError, InvalidInput, NotFound
from voxgate.tenants.models import TenantCreate
from voxgate.tenants.registry import TenantRegistry
from voxgate.tenants.secrets import MAX_SECRET_BYTES, SecretVault
from voxgate.tenants.store import Store

MARKER = "zz-marker-7f3e9c2a-secret-value"


async def _tenant(store: Store, master_key: bytes, name: str = "Acme") -> str:
    return (await TenantRegistry(store, master_key).create(TenantCreate(name=name), "admin")).id


async def _every_stored_byte(store: Store) -> list[bytes]:
    """Every key, field, member and value in Redis, whatever its type."""
    redis = store.redis
    found: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        found.append(key)
        kind = await redis.type(key)
        if kind == b"string":
            found.append(await redis.get(key))
        elif kind == b"hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
        elif kind == b"list":
            found += await redis.lrange(key, 0, -1)
        elif kind == b"set":
            found += list(await redis.smembers(key))
        elif kind == b"zset":
            found += await redis.zrange(key, 0, -1)
        elif kind == b"stream":
            for entry_id, fields in await redis.xrange(key):
                found.append(entry_id)
                for field, value in fields.items():
                    found += [field, value]
        else:
            raise AssertionError(f"unexpected redis type {kind!r} for {key!r}")
    return found


async def test_secret_crud(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    vault = SecretVault(store, master_key)
    info = await vault.put(tenant_id, "twilio", {"account_sid": "AC1", "auth_token": MARKER})
    assert info.name == "twilio"
    await vault.put(tenant_id, "llm", {"api_key": "k", "nested": {"a": [1, 2]}})
    assert await vault.get(tenant_id, "twilio") == {"account_sid": "AC1", "auth_token": MARKER}
    assert await vault.get(tenant_id, "missing") is None
    listed = await vault.list(tenant_id)
    assert [s.name for s in listed.secrets] == ["llm", "twilio"]
    assert MARKER not in repr(listed)

    await vault.put(tenant_id, "twilio", {"auth_token": "new"})
    assert await vault.get(tenant_id, "twilio") == {"auth_token": "new"}
    await vault.delete(tenant_id, "twilio")
    assert await vault.get(tenant_id, "twilio") is None
    with pytest.raises(NotFound):
        await vault.delete(tenant_id, "twilio")
    assert [s.name for s in (await vault.list(tenant_id)).secrets] == ["llm"]
    with pytest.raises(NotFound):
        await vault.list("t_nothere00")
    with pytest.raises(NotFound):
        await vault.put("t_nothere00", "x", {})
    actions = [e.action for e in await AuditLog(store).list(tenant_id)]
    assert actions[:4] == ["secret.delete", "secret.put", "secret.put", "secret.put"]


async def test_secret_validation(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    vault = SecretVault(store, master_key)
    for bad in ("", "Upper", "a/b", "x" * 65, "sp ace", "dot.s"):
        with pytest.raises(InvalidInput) as info:
            await vault.put(tenant_id, bad, {"a": "b"})
        assert info.value.path == "$.name"
    with pytest.raises(InvalidInput) as info:
        await vault.put(tenant_id, "ok", ["not", "an", "object"])  # type: ignore[arg-type]
    assert info.value.path == "$"
    with pytest.raises(InvalidInput):
        await vault.put(tenant_id, "big", {"v": "x" * MAX_SECRET_BYTES})
    assert (await vault.list(tenant_id)).secrets == []


async def test_no_plaintext_anywhere_in_redis(store: Store, master_key: bytes) -> None:
    tenant_id = await _tenant(store, master_key)
    vault = SecretVault(store, master_key)
    await vault.put(tenant_id, "twilio", {"auth_token": MARKER})
    await vault.put(tenant_id, "llm", {"api_key": MARKER, MARKER: "as a key too"})
    for blob in await _every_stored_byte(store):
        assert MARKER.encode() not in blob
    # Not in the audit stream either (checked above as part of every value); and
    # the stored ciphertext is bound to tenant + name.
    sealed = await store.redis.get(keyspace.tenant_key(tenant_id, "secret", "twilio"))
    await store.redis.set(keyspace.tenant_key(tenant_id, "secret", "llm"), sealed)
    with pytest.raises(CryptoError):
        await vault.get(tenant_id, "llm")
    other = await _tenant(store, master_key, "Other")
    await vault.put(other, "twilio", {"auth_token": "other"})
    await store.redis.set(keyspace.tenant_key(other, "secret", "twilio"), sealed)
    with pytest.raises(CryptoError):
        await vault.get(other, "twilio")


async def test_master_rotation_keeps_secrets_and_keys(store: Store, master_key: bytes) -> None:
    created = await TenantRegistry(store, master_key).create(TenantCreate(name="A"), "admin")
    vault = SecretVault(store, master_key)
    await vault.put(created.id, "twilio", {"auth_token": MARKER})
    new_key = generate_master_key()
    assert await vault.rotate_master(new_key) == 2
    assert await vault.get(created.id, "twilio") == {"auth_token": MARKER}
    assert await SecretVault(store, new_key).get(created.id, "twilio") == {"auth_token": MARKER}
    # API keys were hashed under a key the rotation rewrapped, so they still work.
    assert await ApiKeys(store, new_key).authenticate(created.api_key) == created.id
    with pytest.raises(CryptoError):
        await SecretVault(store, master_key).get(created.id, "twilio")


async def test_no_plaintext_in_data_dir_files(tmp_path: Path, master_key: bytes) -> None:
    store = await Store.open(redis_url=None, data_dir=tmp_path)
    try:
        tenant_id = await _tenant(store, master_key)
        await SecretVault(store, master_key).put(tenant_id, "twilio", {"auth_token": MARKER})
    finally:
        await store.close()  # a clean stop flushes the append-only file
    contents = await asyncio.to_thread(
        lambda: {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    )
    assert any(p.name.startswith("appendonly") for p in contents)
    for path, data in contents.items():
        assert MARKER.encode() not in data, path
