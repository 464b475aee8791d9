"""System status gathers sections from whichever providers are registered."""

from __future__ import annotations

from voxgate.admin.status import CallStatus, LiveCounters, SystemStatus, WorkerStatus
from voxgate.tenants.models import Quotas, Tenant


def tenant(tenant_id: str) -> Tenant:
    return Tenant(
        id=tenant_id, name=tenant_id, status="active", quotas=Quotas(), created_at=1.0,
        updated_at=1.0,
    )  # fmt: skip


async def test_empty_sections_without_providers() -> None:
    view = await SystemStatus().collect()
    assert view.tenants == [] and view.workers == [] and view.calls == []
    assert view.limits == {} and view.draining is False


async def test_sections_come_from_providers() -> None:
    status = SystemStatus()

    async def tenants() -> list[Tenant]:
        return [tenant("t_a"), tenant("t_b")]

    async def workers() -> list[WorkerStatus]:
        return [WorkerStatus(pid=7, tenant_id="t_a", calls=2, cpu_percent=1.0, rss_mb=9.0)]

    async def calls() -> list[CallStatus]:
        return [CallStatus(id="c", tenant_id="t_a", agent_id="a", provider="twilio",
                           started_at=2.0)]  # fmt: skip

    async def limits() -> dict[str, object]:
        return {"max_calls": 100}

    status.tenants = tenants
    status.register_workers(workers)
    status.register_calls(calls)
    status.register_limits(limits)
    status.register_counters(lambda tid: LiveCounters(calls=2 if tid == "t_a" else 0))
    status.draining = True
    view = await status.collect()
    assert [(t.id, t.live.calls) for t in view.tenants] == [("t_a", 2), ("t_b", 0)]
    assert view.tenants[0].quotas == Quotas()
    assert view.workers[0].pid == 7 and view.calls[0].provider == "twilio"
    assert view.limits == {"max_calls": 100} and view.draining is True
    assert status.counters("t_b") == LiveCounters()
