"""Supervisor: restart backoff (fake clock) and pools of real processes running a fake worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.agents import ipc
from voxgate.server.os_limits import detect
from voxgate.server.supervisor import (
    Backoff,
    CallLease,
    LeaseEvent,
    Supervisor,
    SupervisorConfig,
    TenantAtCapacity,
    TenantBackingOff,
    WorkerCollector,
    WorkerCommand,
    WorkerLost,
    WorkerState,
)
from voxgate.tenants.models import Quotas

FAKE = Path(__file__).resolve().parent / "fake_worker.py"


# --- backoff policy (sans-IO) ---------------------------------------------------------------


def test_backoff_grows_exponentially_and_caps() -> None:
    backoff = Backoff(base=0.5, factor=2.0, max_delay=4.0, reset_after=60.0)
    assert backoff.ready(0.0)
    delays = [backoff.failure(10.0 + i * 0.01) - (10.0 + i * 0.01) for i in range(6)]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
    assert not backoff.ready(10.06)
    assert backoff.ready(10.05 + 4.0 + 0.01)


def test_backoff_forgets_after_a_quiet_period() -> None:
    backoff = Backoff(base=1.0, factor=3.0, max_delay=100.0, reset_after=30.0)
    backoff.failure(0.0)
    backoff.failure(1.0)
    assert backoff.failures == 2
    assert backoff.failure(100.0) == pytest.approx(101.0)  # back to the base delay
    assert backoff.failures == 1
    assert backoff.delay(100.5) == pytest.approx(0.5)


# --- real processes with the fake worker --------------------------------------------------------


def _config(env: dict[str, str] | None = None, **kw: object) -> SupervisorConfig:
    full_env = {**os.environ, **(env or {})}
    command = WorkerCommand(argv=(sys.executable, str(FAKE)), env=full_env, max_calls=8)
    options: dict[str, object] = {
        "prewarm": 1,
        "max_workers_total": 6,
        "ping_interval": 0.1,
        "ping_timeout": 2.0,
        "start_timeout": 20.0,
        "stop_grace": 2.0,
    }
    options.update(kw)
    return SupervisorConfig(command=command, **options)  # type: ignore[arg-type]


@pytest.fixture
async def sup() -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(detect(), _config())
    await supervisor.start(prewarm_now=True)
    try:
        yield supervisor
    finally:
        await supervisor.close()


def _start(call_id: str, tenant: str) -> ipc.StartCall:
    return ipc.StartCall(call_id=call_id, tenant_id=tenant, agent_id="a1", flow={})


async def _next(lease: CallLease, kind: type[object], within: float = 5.0) -> LeaseEvent:
    async with asyncio.timeout(within):
        async for event in lease.events():
            if isinstance(event, kind):
                return event
    raise AssertionError(f"lease ended without {kind.__name__}")


async def test_prewarmed_worker_binds_to_first_tenant_and_never_moves(sup: Supervisor) -> None:
    async with asyncio.timeout(20):
        await sup.wait_prewarmed()
    idle = [w for w in sup.workers if w.state is WorkerState.IDLE]
    assert len(idle) == 1 and idle[0].tenant_id is None
    status = await sup.status_workers()
    assert status[0].tenant_id is None and status[0].pid == idle[0].pid

    quotas = Quotas(max_workers=2, calls_per_worker=1)
    lease_a = await sup.start_call(_start("c1", "ta"), quotas)
    assert lease_a.pid == idle[0].pid  # the prewarmed one, bound now
    say = await _next(lease_a, ipc.AgentSay)
    assert isinstance(say, ipc.AgentSay) and say.call_id == "c1"
    audio = await _next(lease_a, ipc.AudioOut)
    assert isinstance(audio, ipc.AudioOut) and audio.mark == "m1"

    async with asyncio.timeout(20):
        lease_b = await sup.start_call(_start("c2", "tb"), quotas)
    assert lease_b.pid != lease_a.pid  # another tenant never gets ta's worker
    # ta's worker is full (1 call): its second call needs a second worker...
    async with asyncio.timeout(20):
        lease_a2 = await sup.start_call(_start("c3", "ta"), quotas)
    assert lease_a2.pid not in (lease_a.pid, lease_b.pid)
    # ...and a third exceeds max_workers=2; ``refusal`` says so without trying.
    assert isinstance(sup.refusal("ta", quotas), TenantAtCapacity)
    with pytest.raises(TenantAtCapacity):
        await sup.start_call(_start("c4", "ta"), quotas)
    # Ending a call frees its slot on the same worker.
    await lease_a.end("caller_hangup")
    assert sup.refusal("ta", quotas) is None
    lease_a3 = await sup.start_call(_start("c5", "ta"), quotas)
    assert lease_a3.pid == lease_a.pid
    tenants = {w.pid: w.tenant_id for w in sup.workers if w.tenant_id}
    assert tenants[lease_a.pid] == "ta" and tenants[lease_b.pid] == "tb"
    text = b"".join(
        f"{m.name} {s.labels} {s.value}\n".encode()
        for m in WorkerCollector(sup).collect()
        for s in m.samples
    )
    assert f"'pid': '{lease_a.pid}', 'tenant': 'ta'".encode() in text


async def test_kill_9_ends_only_that_workers_calls_within_a_second(sup: Supervisor) -> None:
    quotas = Quotas(max_workers=1, calls_per_worker=4)
    async with asyncio.timeout(20):
        victim = await sup.start_call(_start("v1", "ta"), quotas)
        victim2 = await sup.start_call(_start("v2", "ta"), quotas)
        other = await sup.start_call(_start("o1", "tb"), quotas)
    assert victim.pid == victim2.pid != other.pid
    await _next(other, ipc.AudioOut)

    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    lost = await _next(victim, WorkerLost, within=1.0)
    assert time.monotonic() - killed_at < 1.0
    assert isinstance(lost, WorkerLost)
    await _next(victim2, WorkerLost, within=1.0)

    # The other tenant's call carries on: marks, then a normal end.
    await other.send(ipc.Mark(call_id="o1", name="m1"))
    heard = await _next(other, ipc.Transcript)
    assert isinstance(heard, ipc.Transcript) and heard.role == "agent"
    await other.send(ipc.EndCall(call_id="o1", reason="done"))
    ended = await _next(other, ipc.CallEnded)
    assert isinstance(ended, ipc.CallEnded)
    assert sup.crashes == 1
    # ta is in restart backoff for a moment; its next call waits that out or is refused.
    backoff = sup._tenant_backoff["ta"]
    assert backoff.failures == 1
    if not backoff.ready(sup.clock()):
        with pytest.raises(TenantBackingOff):
            await sup.start_call(_start("v3", "ta"), quotas)


async def test_memory_quota_breach_kills_only_that_worker() -> None:
    supervisor = Supervisor(detect(), _config({"FAKE_WORKER_ALLOC_MB": "300"}, prewarm=2))
    await supervisor.start(prewarm_now=True)
    try:
        async with asyncio.timeout(20):
            hog = await supervisor.start_call(_start("h1", "ta"), Quotas(memory_mb=128))
            calm = await supervisor.start_call(_start("k1", "tb"), Quotas(memory_mb=1024))
        assert hog.pid != calm.pid
        await hog.send(ipc.Dtmf(call_id="h1", digit="9"))
        lost = await _next(hog, WorkerLost, within=5.0)
        assert isinstance(lost, WorkerLost) and "memory quota" in lost.reason
        assert supervisor.kills.get("memory") == 1
        await calm.send(ipc.Dtmf(call_id="k1", digit="#"))
        bye = await _next(calm, ipc.Hangup)
        assert isinstance(bye, ipc.Hangup)
        assert supervisor.find(calm.pid) is not None
    finally:
        await supervisor.close()


async def test_protocol_version_mismatch_is_refused() -> None:
    supervisor = Supervisor(detect(), _config({"FAKE_WORKER_VERSION": "999"}))
    await supervisor.start(prewarm_now=True)
    try:
        async with asyncio.timeout(20):
            while supervisor.config.spawn_backoff.failures == 0 and supervisor.kills == {}:
                supervisor._capacity.clear()
                await supervisor._capacity.wait()
        assert not any(w.state is WorkerState.IDLE for w in supervisor.workers)
    finally:
        await supervisor.close()


async def test_unresponsive_worker_is_killed() -> None:
    supervisor = Supervisor(detect(), _config({"FAKE_WORKER_NO_PONG": "1"}, ping_timeout=0.4))
    await supervisor.start(prewarm_now=True)
    try:
        async with asyncio.timeout(20):
            lease = await supervisor.start_call(_start("u1", "ta"), Quotas())
            lost = await _next(lease, WorkerLost, within=5.0)
        assert isinstance(lost, WorkerLost) and "unresponsive" in lost.reason
        assert supervisor.kills.get("unresponsive", 0) >= 1
    finally:
        await supervisor.close()


async def test_close_stops_workers_gracefully(sup: Supervisor) -> None:
    async with asyncio.timeout(20):
        await sup.wait_prewarmed()
    pids = [w.pid for w in sup.workers]
    await sup.close()
    assert sup.workers == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
