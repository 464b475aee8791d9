"""Tenant API keys: ``vg_<tenant prefix>_<random>``, stored only as keyed hashes.

Lookup is one GET on a system index from the token's keyed hash to
``<tenant> <key id>``, so authentication costs O(1) however many tenants and
keys exist, and the plaintext never reaches Redis.
"""

from __future__ import annotations

import builtins
import re
import secrets
import time
from collections.abc import Callable

import msgspec
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.crypto import Envelope, constant_time_equal
from voxgate.tenants.errors import NotFound
from voxgate.tenants.ids import new_id
from voxgate.tenants.models import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, Tenant, revalidate
from voxgate.tenants.store import Store, start_writes, to_bytes

HASH_PURPOSE = "apikey"
TOUCH_INTERVAL = 10.0
_TOUCH_CACHE_LIMIT = 10_000
_SHOWN_RANDOM_CHARS = 4
_TOKEN = re.compile(r"^vg_([a-z0-9]{1,6})_[A-Za-z0-9_-]{32}$")


class StoredKey(msgspec.Struct, kw_only=True):
    """What Redis holds per key: metadata plus the keyed hash, never the token."""

    id: str
    prefix: str
    created_at: float
    revoked: bool
    label: str
    hash: str


def tenant_token_prefix(tenant_id: str) -> str:
    """The tenant part of a key: first 6 chars of the id without ``t_``."""
    return tenant_id.removeprefix("t_")[:6]


def _keys_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "apikeys")


class ApiKeys:
    """Create, list, revoke and check tenant API keys."""

    def __init__(
        self, store: Store, master_key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._envelope = Envelope(store, master_key)
        self._audit = AuditLog(store, clock=clock)
        self._clock = clock
        # key id -> when this process last wrote last_used_at; throttles writes.
        self._touched: dict[str, float] = {}

    async def create(
        self, tenant_id: str, body: ApiKeyCreate, actor: str = "system"
    ) -> ApiKeyCreated:
        """Issue a new key; the returned token is the only copy ever shown."""
        body = revalidate(body)
        keys_key = _keys_key(tenant_id)
        token = f"vg_{tenant_token_prefix(tenant_id)}_{secrets.token_urlsafe(24)}"
        token_hash = await self._envelope.token_hash(HASH_PURPOSE, token)
        key_id = new_id("key")
        stored = StoredKey(
            id=key_id,
            prefix=token[: len(token) - 32 + _SHOWN_RANDOM_CHARS],
            created_at=self._clock(),
            revoked=False,
            label=body.label,
            hash=token_hash,
        )
        tenant_key = keyspace.tenant_key(tenant_id, "tenant")

        async def attempt(pipe: Pipeline) -> None:
            if not await pipe.exists(tenant_key):
                raise NotFound(f"tenant {tenant_id!r} not found")
            start_writes(pipe)
            pipe.hset(keys_key, key_id, msgspec.json.encode(stored))
            pipe.set(keyspace.system_key("apikey", token_hash), f"{tenant_id} {key_id}")

        await self._store.optimistic([tenant_key], attempt)
        await self._audit.append(tenant_id, actor, "apikey.create", key_id, {"label": body.label})
        return ApiKeyCreated(id=key_id, api_key=token)

    async def _stored(self, tenant_id: str) -> dict[str, StoredKey]:
        keys_key = _keys_key(tenant_id)
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=False)
            pipe.exists(keyspace.tenant_key(tenant_id, "tenant"))
            pipe.hgetall(keys_key)
            tenant_exists, raw = await pipe.execute()
        if not tenant_exists:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return {
            to_bytes(k).decode(): msgspec.json.decode(to_bytes(v), type=StoredKey)
            for k, v in raw.items()
        }

    async def list(self, tenant_id: str) -> list[ApiKeyInfo]:
        """Every key of the tenant (revoked ones too), oldest first."""
        stored = await self._stored(tenant_id)
        async with self._store.guard():
            used_raw = await self._store.redis.hgetall(
                keyspace.tenant_key(tenant_id, "apikey_used")
            )
        used = {to_bytes(k).decode(): float(to_bytes(v)) for k, v in used_raw.items()}
        infos = [
            ApiKeyInfo(
                id=key.id,
                prefix=key.prefix,
                created_at=key.created_at,
                last_used_at=used.get(key.id),
                revoked=key.revoked,
                label=key.label,
            )
            for key in stored.values()
        ]
        return sorted(infos, key=lambda info: (info.created_at, info.id))

    def _index_keys(self, stored: dict[str, StoredKey]) -> builtins.list[str]:
        return [keyspace.system_key("apikey", key.hash) for key in stored.values()]

    async def index_keys(self, tenant_id: str) -> builtins.list[str]:
        """The system index entries of the tenant's keys (for tenant deletion)."""
        return self._index_keys(await self._stored(tenant_id))

    async def revoke(self, tenant_id: str, key_id: str, actor: str = "system") -> None:
        """Stop a key from working at once; it stays listed as revoked."""
        keys_key = _keys_key(tenant_id)

        async def attempt(pipe: Pipeline) -> None:
            raw = await pipe.hget(keys_key, key_id)
            if raw is None:
                raise NotFound(f"API key {key_id!r} not found")
            stored = msgspec.json.decode(to_bytes(raw), type=StoredKey)
            stored.revoked = True
            start_writes(pipe)
            pipe.hset(keys_key, key_id, msgspec.json.encode(stored))
            pipe.unlink(keyspace.system_key("apikey", stored.hash))

        await self._store.optimistic([keys_key], attempt)
        await self._audit.append(tenant_id, actor, "apikey.revoke", key_id)

    async def authenticate(self, token: str) -> str | None:
        """The tenant id if ``token`` is a live key of an active tenant, else None."""
        match = _TOKEN.match(token) if isinstance(token, str) else None
        if match is None:
            return None
        token_hash = await self._envelope.token_hash(HASH_PURPOSE, token)
        redis = self._store.redis
        async with self._store.guard():
            owner = await redis.get(keyspace.system_key("apikey", token_hash))
            if owner is None:
                return None
            tenant_id, _, key_id = to_bytes(owner).decode().partition(" ")
            if tenant_token_prefix(tenant_id) != match.group(1):
                return None
            pipe = redis.pipeline(transaction=False)
            pipe.hget(keyspace.tenant_key(tenant_id, "apikeys"), key_id)
            pipe.get(keyspace.tenant_key(tenant_id, "tenant"))
            raw_key, raw_tenant = await pipe.execute()
        if raw_key is None or raw_tenant is None:
            return None
        stored = msgspec.json.decode(to_bytes(raw_key), type=StoredKey)
        if stored.revoked or not constant_time_equal(stored.hash, token_hash):
            return None
        tenant = msgspec.json.decode(to_bytes(raw_tenant), type=Tenant)
        if tenant.status != "active":
            return None
        await self._touch(tenant_id, key_id)
        return tenant_id

    async def _touch(self, tenant_id: str, key_id: str) -> None:
        now = self._clock()
        last = self._touched.get(key_id)
        if last is not None and now - last < TOUCH_INTERVAL:
            return
        if len(self._touched) >= _TOUCH_CACHE_LIMIT:
            self._touched.clear()
        self._touched[key_id] = now
        async with self._store.guard():
            await self._store.redis.hset(
                keyspace.tenant_key(tenant_id, "apikey_used"), key_id, repr(now)
            )
