"""Per-INVITE routing data cached in process, checked against the tenant's audit log.

Routing one inbound SIP call reads the number's owner and mapping, the
tenant (status, quotas), its inbound ACL and the agent: five or six Redis
round trips on the media core for every INVITE.  :class:`RouteCache` keeps
that :class:`Route` per number and revalidates it with **one** round trip:
the id of the newest entry of the tenant's audit stream.

Why the audit stream: every write that can change a route — number
create/delete, tenant update/suspend/resume/delete, ACL put, agent
create/update/delete, secret put/delete — appends to the tenant's audit log
after writing (the tenant services promise "every change is audited"), so
an unchanged newest id means nothing the route depends on changed.  A change
through the API is therefore seen by the very next INVITE, in this process
and in any other process sharing the Redis.

A miss reads the newest audit id *before* the data it covers, and checks
that the number still belongs to the same tenant afterwards, so a write
racing the fetch leaves a stale id in the cache (refetched next time), never
stale data under a current id.

Concurrent misses for one number share one fetch. Bounds: entries older than
``max_age`` seconds are refetched regardless (a backstop for writes made
around the services, e.g. by hand in Redis), at most ``max_entries`` numbers
are kept (oldest dropped first), unknown numbers are never cached (a 404
flood cannot fill it). While Redis does not answer, a route validated within
``max_age`` is still served (``stale_served`` counts it): taking calls for
an active tenant beats refusing them all during a store hiccup, and nothing
can change the route while Redis is unreachable. Secrets (the ACL's digest
password) are not cached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from voxgate.server.services import Services
from voxgate.tenants.errors import NotFound, StoreUnavailable
from voxgate.tenants.models import Agent, Number, Tenant
from voxgate.tenants.numbers import normalize_number
from voxgate.tenants.sip_acl import SipAcl, SipAclStore

__all__ = ["Route", "RouteCache"]


class Route(msgspec.Struct, frozen=True):
    """Everything the gateway decides an INVITE on, for one number."""

    tenant: Tenant
    number: Number
    acl: SipAcl
    #: None when the mapped agent no longer exists (the call gets a fallback).
    agent: Agent | None


class _Entry:
    __slots__ = ("checked_at", "fetched_at", "marker", "route")

    def __init__(self, route: Route, marker: str | None, fetched_at: float) -> None:
        self.route = route
        self.marker = marker
        self.fetched_at = fetched_at
        self.checked_at = fetched_at  # last time the marker matched


class RouteCache:
    """Number -> :class:`Route`, revalidated per use (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        acls: SipAclStore,
        *,
        max_age: float = 10.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._services = services
        self._acls = acls
        self._max_age = max_age
        self._max_entries = max(1, max_entries)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[Route | None]] = {}
        self.hits = 0
        self.misses = 0
        self.stale_served = 0

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget every route (of ``tenant_id``, or all)."""
        if tenant_id is None:
            self._entries.clear()
            return
        for key in [k for k, e in self._entries.items() if e.route.tenant.id == tenant_id]:
            del self._entries[key]

    async def _marker(self, tenant_id: str) -> str | None:
        newest = await self._services.audit.list(tenant_id, limit=1)
        return newest[0].id if newest else None

    async def lookup(self, number: str) -> Route | None:
        """The route for an inbound number (with or without ``+``); None if unknown.

        Raises :class:`StoreUnavailable` (no usable cached route) and
        :class:`NotFound` (the number's tenant vanished meanwhile).
        """
        e164 = normalize_number(number)
        if e164 is None:
            return None
        entry = self._entries.get(e164)
        now = self._clock()
        expired = False
        if entry is not None:
            if now - entry.fetched_at >= self._max_age:
                expired = True
            else:
                try:
                    marker = await self._marker(entry.route.tenant.id)
                except StoreUnavailable:
                    return self._stale(entry, now)
                if marker == entry.marker:
                    self.hits += 1
                    entry.checked_at = now
                    return entry.route
                del self._entries[e164]
        self.misses += 1
        if entry is not None and expired:
            try:
                return await self._fetch_once(e164, now)
            except StoreUnavailable:
                return self._stale(entry, now)
        return await self._fetch_once(e164, now)

    def _stale(self, entry: _Entry, now: float) -> Route:
        # Redis does not answer: a route validated within max_age still
        # stands (nothing can change it while Redis is unreachable).
        if now - entry.checked_at >= self._max_age:
            raise StoreUnavailable("route not validated recently and the store is unavailable")
        self.stale_served += 1
        return entry.route

    async def _fetch_once(self, e164: str, now: float) -> Route | None:
        # One fetch per number at a time: at a few hundred INVITEs a second
        # an expired entry would otherwise send every caller of that moment
        # to Redis with five reads each.
        pending = self._inflight.get(e164)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.get_running_loop().create_task(self._fetch(e164, now))
        self._inflight[e164] = task
        task.add_done_callback(lambda _t: self._inflight.pop(e164, None))
        return await asyncio.shield(task)

    async def _fetch(self, e164: str, now: float) -> Route | None:
        services = self._services
        first = await services.numbers.lookup(e164)
        if first is None:
            return None
        tenant_id = first[0]
        marker = await self._marker(tenant_id)
        # Everything below is read after the marker: a write from here on
        # changes the marker and invalidates what we store.
        found = await services.numbers.lookup(e164)
        if found is None:
            return None
        # Moved to another tenant meanwhile: serve it, but do not keep it
        # (the marker read belongs to the old owner).
        keep = found[0] == tenant_id
        tenant_id, mapping = found
        tenant = await services.registry.get(tenant_id)
        acl = await self._acls.get(tenant_id)
        try:
            agent: Agent | None = await services.agents.get(tenant_id, mapping.agent_id)
        except NotFound:
            agent = None
        route = Route(tenant=tenant, number=mapping, acl=acl, agent=agent)
        if keep:
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[e164] = _Entry(route, marker, now)
        return route
