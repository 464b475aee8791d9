"""Phone numbers mapped to agents; a number belongs to at most one tenant.

A system index ``vg:sys:number:<e164>`` -> ``<tenant> <number id>`` makes the
inbound lookup (Twilio webhook, SIP INVITE) one GET, and SET NX on it is what
guarantees a number cannot be claimed twice.
"""

from __future__ import annotations

import builtins
import re
import time
from collections.abc import Callable

import msgspec
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import Conflict, InvalidInput, NotFound
from voxgate.tenants.ids import new_id
from voxgate.tenants.models import E164_PATTERN, Number, NumberCreate, revalidate
from voxgate.tenants.store import Store, start_writes, to_bytes

_E164 = re.compile(E164_PATTERN)


def normalize_number(number: str) -> str | None:
    """``+E.164`` form of ``number`` given with or without the ``+``; None if invalid."""
    candidate = number.strip()
    if not candidate.startswith("+"):
        candidate = "+" + candidate
    return candidate if _E164.match(candidate) else None


def _numbers_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "numbers")


class Numbers:
    """Create, list, delete and look up number mappings."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._audit = AuditLog(store, clock=clock)

    async def create(self, tenant_id: str, body: NumberCreate, actor: str = "system") -> Number:
        """Map a number to one of the tenant's agents; Conflict if anyone has it already."""
        body = revalidate(body)
        numbers_key = _numbers_key(tenant_id)
        tenant_key = keyspace.tenant_key(tenant_id, "tenant")
        agents_key = keyspace.tenant_key(tenant_id, "agents")
        index_key = keyspace.system_key("number", body.number)
        number = Number(
            id=new_id("num"),
            number=body.number,
            provider=body.provider,
            agent_id=body.agent_id,
            created_at=self._clock(),
        )

        async def attempt(pipe: Pipeline) -> None:
            if not await pipe.exists(tenant_key):
                raise NotFound(f"tenant {tenant_id!r} not found")
            if not await pipe.hexists(agents_key, body.agent_id):
                raise InvalidInput(f"agent {body.agent_id!r} does not exist", "$.agent_id")
            if await pipe.exists(index_key):
                raise Conflict(f"number {body.number} is already in use")
            start_writes(pipe)
            pipe.set(index_key, f"{tenant_id} {number.id}")
            pipe.hset(numbers_key, number.id, msgspec.json.encode(number))

        await self._store.optimistic([tenant_key, agents_key, index_key], attempt)
        await self._audit.append(
            tenant_id, actor, "number.create", number.id, {"number": number.number}
        )
        return number

    async def list(self, tenant_id: str) -> builtins.list[Number]:
        """The tenant's numbers, oldest first."""
        async with self._store.guard():
            raw = await self._store.redis.hgetall(_numbers_key(tenant_id))
        numbers = [msgspec.json.decode(to_bytes(v), type=Number) for v in raw.values()]
        return sorted(numbers, key=lambda n: (n.created_at, n.id))

    async def for_agent(self, tenant_id: str, agent_id: str) -> builtins.list[Number]:
        """Numbers currently routed to ``agent_id``."""
        return [n for n in await self.list(tenant_id) if n.agent_id == agent_id]

    async def index_entries(self, tenant_id: str) -> builtins.list[tuple[str, bytes]]:
        """(system index key, expected owner value) per number, for tenant deletion."""
        return [
            (keyspace.system_key("number", n.number), f"{tenant_id} {n.id}".encode())
            for n in await self.list(tenant_id)
        ]

    async def delete(self, tenant_id: str, number_id: str, actor: str = "system") -> None:
        """Unmap a number; NotFound if the tenant has no such number."""
        numbers_key = _numbers_key(tenant_id)

        async def attempt(pipe: Pipeline) -> str:
            raw = await pipe.hget(numbers_key, number_id)
            if raw is None:
                raise NotFound(f"number {number_id!r} not found")
            number = msgspec.json.decode(to_bytes(raw), type=Number)
            index_key = keyspace.system_key("number", number.number)
            await pipe.watch(index_key)
            owner = await pipe.get(index_key)
            start_writes(pipe)
            pipe.hdel(numbers_key, number_id)
            if owner == f"{tenant_id} {number_id}".encode():
                pipe.unlink(index_key)
            return number.number

        e164 = await self._store.optimistic([numbers_key], attempt)
        await self._audit.append(tenant_id, actor, "number.delete", number_id, {"number": e164})

    async def lookup(self, number: str) -> tuple[str, Number] | None:
        """(tenant id, mapping) for an inbound number, with or without ``+``; else None."""
        e164 = normalize_number(number)
        if e164 is None:
            return None
        redis = self._store.redis
        async with self._store.guard():
            owner = await redis.get(keyspace.system_key("number", e164))
            if owner is None:
                return None
            tenant_id, _, number_id = to_bytes(owner).decode().partition(" ")
            raw = await redis.hget(keyspace.tenant_key(tenant_id, "numbers"), number_id)
        if raw is None:
            return None
        return tenant_id, msgspec.json.decode(to_bytes(raw), type=Number)
