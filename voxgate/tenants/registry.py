"""Tenants: create, read, update, suspend/resume and delete with all their data."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable

import msgspec
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.apikeys import ApiKeys
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import NotFound
from voxgate.tenants.ids import new_tenant_id
from voxgate.tenants.models import (
    ApiKeyCreate,
    Quotas,
    Tenant,
    TenantCreate,
    TenantCreated,
    TenantStatus,
    TenantUpdate,
    revalidate,
)
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.store import Store, start_writes, to_bytes

_INDEX = keyspace.system_key("tenants")
_BATCH = 500


def _record_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "tenant")


class TenantRegistry:
    """The tenant records and their lifecycle; every change is audited."""

    def __init__(
        self, store: Store, master_key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._clock = clock
        self._apikeys = ApiKeys(store, master_key, clock=clock)
        self._numbers = Numbers(store, clock=clock)
        self._audit = AuditLog(store, clock=clock)

    async def create(self, body: TenantCreate, actor: str) -> TenantCreated:
        """Create an active tenant and its first API key (returned once)."""
        body = revalidate(body)
        now = self._clock()
        redis = self._store.redis
        while True:
            tenant = Tenant(
                id=new_tenant_id(),
                name=body.name,
                status="active",
                quotas=body.quotas or Quotas(),
                created_at=now,
                updated_at=now,
            )
            async with self._store.guard():
                # NX guards against the (astronomically unlikely) id collision.
                if await redis.set(_record_key(tenant.id), msgspec.json.encode(tenant), nx=True):
                    await redis.zadd(_INDEX, {tenant.id: now})
                    break
        await self._audit.append(
            tenant.id, actor, "tenant.create", tenant.id, {"name": tenant.name}
        )
        key = await self._apikeys.create(tenant.id, ApiKeyCreate(label="initial"), actor)
        return TenantCreated(id=tenant.id, name=tenant.name, api_key=key.api_key)

    async def get(self, tenant_id: str) -> Tenant:
        """The tenant, or NotFound."""
        key = _record_key(tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.get(key)
        if raw is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return msgspec.json.decode(to_bytes(raw), type=Tenant)

    async def list(self) -> builtins.list[Tenant]:
        """All tenants, oldest first."""
        redis = self._store.redis
        tenants: builtins.list[Tenant] = []
        async with self._store.guard():
            ids = [to_bytes(raw).decode() for raw in await redis.zrange(_INDEX, 0, -1)]
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                raws = await redis.mget([_record_key(tid) for tid in chunk])
                tenants.extend(
                    msgspec.json.decode(to_bytes(raw), type=Tenant) for raw in raws if raw
                )
        return tenants

    async def _modify(self, tenant_id: str, change: Callable[[Tenant], Tenant]) -> Tenant:
        key = _record_key(tenant_id)

        async def attempt(pipe: Pipeline) -> Tenant:
            raw = await pipe.get(key)
            if raw is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            tenant = change(msgspec.json.decode(to_bytes(raw), type=Tenant))
            tenant.updated_at = self._clock()
            start_writes(pipe)
            pipe.set(key, msgspec.json.encode(tenant))
            return tenant

        return await self._store.optimistic([key], attempt)

    async def update(self, tenant_id: str, body: TenantUpdate, actor: str) -> Tenant:
        """Rename and/or change some quotas; fields left None keep their values."""
        body = revalidate(body)

        def change(tenant: Tenant) -> Tenant:
            if body.name is not None:
                tenant.name = body.name
            if body.quotas is not None:
                patch = {
                    field: value
                    for field, value in msgspec.structs.asdict(body.quotas).items()
                    if value is not None
                }
                tenant.quotas = msgspec.structs.replace(tenant.quotas, **patch)
            return tenant

        tenant = await self._modify(tenant_id, change)
        detail = {"fields": ",".join(k for k, v in msgspec.structs.asdict(body).items() if v)}
        await self._audit.append(tenant_id, actor, "tenant.update", tenant_id, detail)
        return tenant

    async def _set_status(self, tenant_id: str, status: TenantStatus, actor: str) -> Tenant:
        def change(tenant: Tenant) -> Tenant:
            tenant.status = status
            return tenant

        tenant = await self._modify(tenant_id, change)
        action = "tenant.suspend" if status == "suspended" else "tenant.resume"
        await self._audit.append(tenant_id, actor, action, tenant_id)
        return tenant

    async def suspend(self, tenant_id: str, actor: str) -> Tenant:
        """Block the tenant; its API keys stop working on the next request."""
        return await self._set_status(tenant_id, "suspended", actor)

    async def resume(self, tenant_id: str, actor: str) -> Tenant:
        """Make a suspended tenant active again."""
        return await self._set_status(tenant_id, "active", actor)

    async def delete(self, tenant_id: str, actor: str) -> None:
        """Remove the tenant, every ``vg:{tenant}:*`` key and its global index entries."""
        tenant = await self.get(tenant_id)
        index_keys = await self._apikeys.index_keys(tenant_id)
        owned_numbers = await self._numbers.index_entries(tenant_id)
        redis = self._store.redis
        async with self._store.guard():
            # The record goes first so the tenant's keys stop authenticating at once.
            pipe = redis.pipeline(transaction=False)
            pipe.unlink(_record_key(tenant_id))
            pipe.zrem(_INDEX, tenant_id)
            if index_keys:
                pipe.unlink(*index_keys)
            await pipe.execute()
            for index_key, owner in owned_numbers:
                # Only drop the mapping if it still points at this tenant.
                if await redis.get(index_key) == owner:
                    await redis.unlink(index_key)
            batch: builtins.list[bytes] = []
            async for raw in redis.scan_iter(match=keyspace.tenant_pattern(tenant_id), count=1000):
                batch.append(to_bytes(raw))
                if len(batch) >= _BATCH:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)
        await self._audit.append(None, actor, "tenant.delete", tenant_id, {"name": tenant.name})
