"""Stored agents and their published versions.

An agent's current state lives in the tenant's ``agents`` hash; each time its
flow changes a version is appended to ``agent_versions:<id>`` and the flow
document is stored content-addressed under ``flow:<sha256>``, so identical
flows are kept once and old versions stay retrievable.  Flow validation is
the caller's job (``voxgate.agents.flowspec``); this module only stores.
"""

from __future__ import annotations

import builtins
import hashlib
import time
from collections.abc import Callable
from typing import Any, get_args

import msgspec
from redis.asyncio.client import Pipeline

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from voxgate.tenants.ids import new_id
from voxgate.tenants.models import Agent, AgentKind, AgentVersion, Tenant
from voxgate.tenants.numbers import Numbers
from voxgate.tenants.store import Store, start_writes, to_bytes

_KINDS: frozenset[str] = frozenset(get_args(AgentKind))
MAX_NAME = 100


def flow_hash(flow: dict[str, Any] | None) -> str:
    """SHA-256 of the flow's canonical JSON (sorted keys); identifies a version's content."""
    return hashlib.sha256(msgspec.json.encode(flow, order="sorted")).hexdigest()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise InvalidInput(f"name must be 1..{MAX_NAME} characters", "$.name")


def _agents_key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "agents")


class AgentStore:
    """CRUD and versions of a tenant's agents, within its ``max_agents`` quota."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._audit = AuditLog(store, clock=clock)
        self._numbers = Numbers(store, clock=clock)

    def _queue_version(
        self,
        pipe: Pipeline,
        tenant_id: str,
        agent_id: str,
        version: int,
        flow: dict[str, Any] | None,
    ) -> None:
        digest = flow_hash(flow)
        pipe.set(keyspace.tenant_key(tenant_id, "flow", digest), msgspec.json.encode(flow))
        entry = AgentVersion(version=version, created_at=self._clock(), flow_hash=digest)
        pipe.rpush(
            keyspace.tenant_key(tenant_id, "agent_versions", agent_id), msgspec.json.encode(entry)
        )

    async def create(
        self,
        tenant_id: str,
        name: str,
        kind: str,
        template: str | None,
        flow: dict[str, Any] | None,
        warnings: builtins.list[str],
        actor: str = "system",
    ) -> Agent:
        """Store a new agent as version 1; QuotaExceeded beyond the tenant's max_agents."""
        _check_name(name)
        if kind not in _KINDS:
            raise InvalidInput(f"kind must be one of {sorted(_KINDS)}", "$.kind")
        agents_key = _agents_key(tenant_id)
        tenant_key = keyspace.tenant_key(tenant_id, "tenant")
        now = self._clock()
        agent = Agent(
            id=new_id("ag"),
            name=name,
            kind=kind,  # type: ignore[arg-type]  # checked against AgentKind above
            template=template,
            version=1,
            flow=flow,
            warnings=list(warnings),
            created_at=now,
            updated_at=now,
        )

        async def attempt(pipe: Pipeline) -> None:
            raw_tenant = await pipe.get(tenant_key)
            if raw_tenant is None:
                raise NotFound(f"tenant {tenant_id!r} not found")
            quotas = msgspec.json.decode(to_bytes(raw_tenant), type=Tenant).quotas
            if await pipe.hlen(agents_key) >= quotas.max_agents:
                raise QuotaExceeded(f"tenant may have at most {quotas.max_agents} agents")
            start_writes(pipe)
            pipe.hset(agents_key, agent.id, msgspec.json.encode(agent))
            self._queue_version(pipe, tenant_id, agent.id, 1, flow)

        await self._store.optimistic([tenant_key, agents_key], attempt)
        await self._audit.append(tenant_id, actor, "agent.create", agent.id, {"name": name})
        return agent

    async def get(self, tenant_id: str, agent_id: str) -> Agent:
        """The agent's current state, or NotFound."""
        async with self._store.guard():
            raw = await self._store.redis.hget(_agents_key(tenant_id), agent_id)
        if raw is None:
            raise NotFound(f"agent {agent_id!r} not found")
        return msgspec.json.decode(to_bytes(raw), type=Agent)

    async def list(self, tenant_id: str) -> builtins.list[Agent]:
        """The tenant's agents, oldest first."""
        async with self._store.guard():
            raw = await self._store.redis.hgetall(_agents_key(tenant_id))
        agents = [msgspec.json.decode(to_bytes(v), type=Agent) for v in raw.values()]
        return sorted(agents, key=lambda a: (a.created_at, a.id))

    async def update(
        self,
        tenant_id: str,
        agent_id: str,
        name: str | None = None,
        flow: dict[str, Any] | None = None,
        warnings: builtins.list[str] | None = None,
        actor: str = "system",
    ) -> Agent:
        """Rename and/or replace the flow; a changed flow publishes a new version."""
        if name is not None:
            _check_name(name)
        agents_key = _agents_key(tenant_id)

        async def attempt(pipe: Pipeline) -> Agent:
            raw = await pipe.hget(agents_key, agent_id)
            if raw is None:
                raise NotFound(f"agent {agent_id!r} not found")
            agent = msgspec.json.decode(to_bytes(raw), type=Agent)
            new_version = flow is not None and flow_hash(flow) != flow_hash(agent.flow)
            if name is not None:
                agent.name = name
            if new_version:
                agent.flow = flow
                agent.kind = "flow"
                agent.version += 1
                agent.warnings = list(warnings or [])
            agent.updated_at = self._clock()
            start_writes(pipe)
            pipe.hset(agents_key, agent_id, msgspec.json.encode(agent))
            if new_version:
                self._queue_version(pipe, tenant_id, agent_id, agent.version, flow)
            return agent

        agent = await self._store.optimistic([agents_key], attempt)
        await self._audit.append(
            tenant_id, actor, "agent.update", agent_id, {"version": str(agent.version)}
        )
        return agent

    async def delete(self, tenant_id: str, agent_id: str, actor: str = "system") -> None:
        """Remove an agent; Conflict while numbers still route to it."""
        await self.get(tenant_id, agent_id)
        routed = await self._numbers.for_agent(tenant_id, agent_id)
        if routed:
            listed = ", ".join(n.number for n in routed)
            raise Conflict(f"agent {agent_id!r} still receives calls for {listed}")
        async with self._store.guard():
            pipe = self._store.redis.pipeline(transaction=True)
            pipe.hdel(_agents_key(tenant_id), agent_id)
            pipe.unlink(keyspace.tenant_key(tenant_id, "agent_versions", agent_id))
            removed, _ = await pipe.execute()
        if not removed:
            raise NotFound(f"agent {agent_id!r} not found")
        await self._audit.append(tenant_id, actor, "agent.delete", agent_id)

    async def versions(self, tenant_id: str, agent_id: str) -> builtins.list[AgentVersion]:
        """Published versions, oldest first."""
        await self.get(tenant_id, agent_id)
        async with self._store.guard():
            raw = await self._store.redis.lrange(
                keyspace.tenant_key(tenant_id, "agent_versions", agent_id), 0, -1
            )
        return [msgspec.json.decode(to_bytes(v), type=AgentVersion) for v in raw]

    async def flow_at(self, tenant_id: str, agent_id: str, version: int) -> dict[str, Any] | None:
        """The flow document of one published version (NotFound if no such version)."""
        for entry in await self.versions(tenant_id, agent_id):
            if entry.version == version:
                async with self._store.guard():
                    raw = await self._store.redis.get(
                        keyspace.tenant_key(tenant_id, "flow", entry.flow_hash)
                    )
                if raw is None:
                    return None
                decoded: dict[str, Any] | None = msgspec.json.decode(
                    to_bytes(raw), type=dict[str, Any] | None
                )
                return decoded
        raise NotFound(f"agent {agent_id!r} has no version {version}")
