"""RouteCache on a real embedded Redis: one round trip per hit, audited writes invalidate."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.server.route_cache import RouteCache
from voxgate.server.services import Services
from voxgate.tenants.errors import StoreUnavailable
from voxgate.tenants.models import NumberCreate, TenantCreate
from voxgate.tenants.sip_acl import SipAclStore, SipAclUpdate
from voxgate.tenants.store import Store

NUMBER = "+15550001000"


class Env:
    def __init__(self, services: Services, tenant_id: str, agent_id: str, number_id: str) -> None:
        self.services = services
        self.tenant_id = tenant_id
        self.agent_id = agent_id
        self.number_id = number_id
        self.now = 0.0
        self.cache = RouteCache(
            services, SipAclStore(services.store), max_age=10.0, clock=lambda: self.now
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = await Store.open(redis_url=None, data_dir=tmp_path, ping_interval=0.2)
    services = Services.build(store, os.urandom(32))
    try:
        tenant = await services.registry.create(TenantCreate(name="t"), "test")
        agent = await services.agents.create(tenant.id, "echo", "echo", "echo", None, [])
        number = await services.numbers.create(
            tenant.id, NumberCreate(number=NUMBER, provider="sip", agent_id=agent.id)
        )
        yield Env(services, tenant.id, agent.id, number.id)
    finally:
        await store.close()


async def test_hit_after_miss_and_unknown_numbers_not_cached(env: Env) -> None:
    first = await env.cache.lookup(NUMBER)
    assert first is not None and first.tenant.id == env.tenant_id
    assert first.agent is not None and first.agent.id == env.agent_id
    again = await env.cache.lookup(NUMBER.lstrip("+"))
    assert again is first
    assert (env.cache.hits, env.cache.misses) == (1, 1)
    assert await env.cache.lookup("+19999999999") is None
    assert await env.cache.lookup("not-a-number") is None
    assert len(env.cache) == 1


async def test_acl_put_is_seen_by_the_next_lookup(env: Env) -> None:
    assert not (await env.cache.lookup(NUMBER)).acl.restricts  # type: ignore[union-attr]
    # Written through another store instance, as the API does.
    await SipAclStore(env.services.store).put(env.tenant_id, SipAclUpdate(cidrs=["10.0.0.0/8"]))
    route = await env.cache.lookup(NUMBER)
    assert route is not None and route.acl.cidrs == ["10.0.0.0/8"]


async def test_suspend_agent_rename_and_number_delete_invalidate(env: Env) -> None:
    await env.cache.lookup(NUMBER)
    await env.services.registry.suspend(env.tenant_id, "test")
    route = await env.cache.lookup(NUMBER)
    assert route is not None and route.tenant.status != "active"
    await env.services.agents.update(env.tenant_id, env.agent_id, name="renamed", actor="t")
    route = await env.cache.lookup(NUMBER)
    assert route is not None and route.agent is not None and route.agent.name == "renamed"
    await env.services.numbers.delete(env.tenant_id, env.number_id, "test")
    assert await env.cache.lookup(NUMBER) is None
    assert len(env.cache) == 0


async def test_max_age_refetches_and_outage_serves_young_routes(env: Env) -> None:
    await env.cache.lookup(NUMBER)
    env.now = 10.0
    await env.cache.lookup(NUMBER)
    assert env.cache.misses == 2
    await env.services.store.close()
    env.now = 15.0
    route = await env.cache.lookup(NUMBER)  # young enough: served while Redis is away
    assert route is not None and env.cache.stale_served == 1
    env.now = 21.0
    with pytest.raises(StoreUnavailable):
        await env.cache.lookup(NUMBER)


async def test_bounded_and_invalidate(env: Env) -> None:
    cache = RouteCache(env.services, SipAclStore(env.services.store), max_entries=1)
    second = "+15550001001"
    await env.services.numbers.create(
        env.tenant_id, NumberCreate(number=second, provider="sip", agent_id=env.agent_id)
    )
    await cache.lookup(NUMBER)
    await cache.lookup(second)
    assert len(cache) == 1
    cache.invalidate("other-tenant")
    assert len(cache) == 1
    cache.invalidate(env.tenant_id)
    assert len(cache) == 0


async def test_concurrent_misses_share_one_fetch(env: Env) -> None:
    routes = await asyncio.gather(*(env.cache.lookup(NUMBER) for _ in range(20)))
    assert all(r is routes[0] for r in routes) and routes[0] is not None
    assert len(env.cache._inflight) == 0
