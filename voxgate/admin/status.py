"""System status: one view of tenants, workers, calls and limits, gathered from providers.

Parts that own live state (the worker supervisor, the call registry, admission
control) register a provider for their section when they start; until one does,
a section is empty.  This module only gathers; it never reaches into those parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from voxgate.tenants.models import Quotas, Tenant


class LiveCounters(msgspec.Struct, kw_only=True):
    """What a tenant is using right now, next to its quotas."""

    calls: int = 0
    workers: int = 0
    calls_per_second: float = 0.0


class TenantStatusView(msgspec.Struct, kw_only=True):
    """A tenant in the status view."""

    id: str
    name: str
    status: str
    quotas: Quotas
    live: LiveCounters


class WorkerStatus(msgspec.Struct, kw_only=True):
    """One speech worker process."""

    pid: int
    tenant_id: str | None
    calls: int
    cpu_percent: float
    rss_mb: float


class CallStatus(msgspec.Struct, kw_only=True):
    """One live call."""

    id: str
    tenant_id: str
    agent_id: str
    provider: str
    started_at: float


class TrunkRegistrationStatus(msgspec.Struct, kw_only=True):
    """One SIP trunk's registration with its carrier, as of now."""

    tenant_id: str
    trunk_id: str
    state: str  # registered, registering, failed, ...
    host: str | None  # the registrar in use
    expires_in: float | None
    retry_in: float | None
    last_error: str | None
    failures: int
    registrations: int


class SystemStatusView(msgspec.Struct, kw_only=True):
    """Answer to ``GET /system/status``."""

    tenants: list[TenantStatusView]
    workers: list[WorkerStatus]
    calls: list[CallStatus]
    limits: dict[str, Any]
    draining: bool = False
    trunk_registrations: list[TrunkRegistrationStatus] = msgspec.field(default_factory=list)


TenantsProvider = Callable[[], Awaitable[list[Tenant]]]
CountersProvider = Callable[[str], LiveCounters]
WorkersProvider = Callable[[], Awaitable[list[WorkerStatus]]]
CallsProvider = Callable[[], Awaitable[list[CallStatus]]]
LimitsProvider = Callable[[], Awaitable[dict[str, Any]]]
RegistrationsProvider = Callable[[], list[TrunkRegistrationStatus]]


def _no_counters(_tenant_id: str) -> LiveCounters:
    return LiveCounters()


class SystemStatus:
    """Registry of section providers; :meth:`collect` builds the whole view."""

    def __init__(self) -> None:
        self.tenants: TenantsProvider | None = None
        self._counters: CountersProvider = _no_counters
        self._workers: WorkersProvider | None = None
        self._calls: CallsProvider | None = None
        self._limits: LimitsProvider | None = None
        self._registrations: RegistrationsProvider | None = None
        self.draining = False

    def register_counters(self, provider: CountersProvider) -> None:
        """Live per-tenant counters (calls, workers, cps)."""
        self._counters = provider

    def register_workers(self, provider: WorkersProvider) -> None:
        self._workers = provider

    def register_calls(self, provider: CallsProvider) -> None:
        self._calls = provider

    def register_limits(self, provider: LimitsProvider) -> None:
        """System-wide limits and admission state (e.g. global call cap, pool size)."""
        self._limits = provider

    def register_trunk_registrations(self, provider: RegistrationsProvider | None) -> None:
        """Live trunk registrations (None when SIP stops)."""
        self._registrations = provider

    def counters(self, tenant_id: str) -> LiveCounters:
        return self._counters(tenant_id)

    async def workers(self) -> list[WorkerStatus]:
        return await self._workers() if self._workers is not None else []

    async def calls(self) -> list[CallStatus]:
        return await self._calls() if self._calls is not None else []

    async def collect(self) -> SystemStatusView:
        tenants = await self.tenants() if self.tenants is not None else []
        return SystemStatusView(
            tenants=[
                TenantStatusView(
                    id=tenant.id,
                    name=tenant.name,
                    status=tenant.status,
                    quotas=tenant.quotas,
                    live=self._counters(tenant.id),
                )
                for tenant in tenants
            ],
            workers=await self.workers(),
            calls=await self.calls(),
            limits=await self._limits() if self._limits is not None else {},
            draining=self.draining,
            trunk_registrations=self._registrations() if self._registrations is not None else [],
        )
