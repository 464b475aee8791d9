"""Tenant secrets (provider credentials, LLM keys): write-only from the API.

Values are JSON objects sealed with the tenant's data key (see ``crypto``);
Redis holds only ciphertext plus a name -> updated_at index for listing.
``get`` exists for internal consumers (webhook signature checks, LLM calls)
and is never reachable over HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import msgspec

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.crypto import Envelope
from voxgate.tenants.errors import InvalidInput, NotFound
from voxgate.tenants.models import SECRET_NAME_PATTERN, SecretInfo, SecretList
from voxgate.tenants.store import Store, require_tenant, to_bytes

MAX_SECRET_BYTES = 64 * 1024
_NAME = re.compile(SECRET_NAME_PATTERN)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput("secret names are 1-64 characters of a-z 0-9 _ -", "$.name")


def _index_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "secrets")


class SecretVault:
    """Put, list, delete (and, internally, read) a tenant's secrets."""

    def __init__(
        self, store: Store, master_key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._envelope = Envelope(store, master_key)
        self._audit = AuditLog(store, clock=clock)
        self._clock = clock

    async def put(
        self, tenant_id: str, name: str, value: dict[str, Any], actor: str = "system"
    ) -> SecretInfo:
        """Store (or replace) a secret; the value must be a JSON object."""
        _check_name(name)
        index_key = _index_key(tenant_id)
        if not isinstance(value, dict):
            raise InvalidInput("a secret's value must be a JSON object", "$")
        try:
            plaintext = msgspec.json.encode(value)
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidInput(f"secret value is not JSON-encodable: {exc}", "$") from None
        if len(plaintext) > MAX_SECRET_BYTES:
            raise InvalidInput(f"secret value exceeds {MAX_SECRET_BYTES} bytes", "$")
        await require_tenant(self._store, tenant_id)
        sealed = await self._envelope.seal(tenant_id, name, plaintext)
        now = self._clock()
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=True)
            pipe.set(keyspace.tenant_key(tenant_id, "secret", name), sealed)
            pipe.hset(index_key, name, repr(now))
            await pipe.execute()
        await self._audit.append(tenant_id, actor, "secret.put", name)
        return SecretInfo(name=name, updated_at=now)

    async def get(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        """The decrypted value, or None if there is no such secret (internal use only)."""
        _check_name(name)
        _index_key(tenant_id)
        async with self._store.guard():
            sealed = await self._store.redis.get(keyspace.tenant_key(tenant_id, "secret", name))
        if sealed is None:
            return None
        plaintext = await self._envelope.open(tenant_id, name, to_bytes(sealed))
        return msgspec.json.decode(plaintext, type=dict[str, Any])

    async def list(self, tenant_id: str) -> SecretList:
        """Names and update times, sorted by name; never values."""
        index_key = _index_key(tenant_id)
        await require_tenant(self._store, tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.hgetall(index_key)
        infos = [
            SecretInfo(name=to_bytes(k).decode(), updated_at=float(to_bytes(v)))
            for k, v in raw.items()
        ]
        return SecretList(secrets=sorted(infos, key=lambda info: info.name))

    async def delete(self, tenant_id: str, name: str, actor: str = "system") -> None:
        """Remove a secret; NotFound if it does not exist."""
        _check_name(name)
        index_key = _index_key(tenant_id)
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=True)
            pipe.hdel(index_key, name)
            pipe.unlink(keyspace.tenant_key(tenant_id, "secret", name))
            removed, _ = await pipe.execute()
        if not removed:
            raise NotFound(f"secret {name!r} not found")
        await self._audit.append(tenant_id, actor, "secret.delete", name)

    async def rotate_master(self, new_key: bytes) -> int:
        """Rewrap every tenant's data key (and the token hashing key) under ``new_key``."""
        return await self._envelope.rotate_master(new_key)
