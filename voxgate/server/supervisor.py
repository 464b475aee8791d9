"""Speech worker supervisor: per-tenant pools of worker processes, in the media core.

- A small **prewarmed pool** of unassigned workers (models loaded, handshake
  done) keeps first-call latency low. A worker is bound to a tenant when it
  takes its first call and never serves another tenant; it then counts
  against that tenant's ``max_workers``.
- A call goes to the tenant's least-loaded worker with fewer than
  ``calls_per_worker`` calls; else to a newly bound worker while the tenant
  is under ``max_workers``; else it is refused (:class:`TenantAtCapacity`).
- **Handshake**: a worker's first frame is ``Hello`` with the protocol
  version, sent once its models are loaded; a mismatch kills it.
- **Health**: every ``ping_interval`` a ``Ping``; no ``Pong`` for
  ``ping_timeout`` kills the worker (hung), as does an RSS above the
  tenant's ``memory_mb`` (see :mod:`voxgate.server.os_limits`).
- **Death** (crash, ``kill -9``, limit breach) ends only that worker's calls:
  each :class:`CallLease` gets :class:`WorkerLost` as soon as the socket
  closes, and the agent hangs up with reason ``worker_lost`` so the
  provider's fallback runs. The pool is refilled with backoff
  (:class:`Backoff`), and a tenant whose workers keep dying waits out its own
  backoff before it gets another one.
- **Stop**: ``EndWorker`` and a grace period, then ``SIGKILL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from voxgate.admin.status import WorkerStatus
from voxgate.agents import ipc
from voxgate.server.os_limits import (
    CpuThrottle,
    HostLimits,
    LimitsError,
    WorkerLimits,
    apply_to_pid,
)
from voxgate.tenants.models import Quotas

__all__ = [
    "Backoff",
    "CallLease",
    "LeaseEvent",
    "Supervisor",
    "SupervisorConfig",
    "SupervisorError",
    "TenantAtCapacity",
    "TenantBackingOff",
    "WorkerCollector",
    "WorkerLost",
    "WorkerState",
    "WorkerUnavailable",
]

log = logging.getLogger("voxgate.supervisor")

ClockFn = Callable[[], float]


# --- errors -------------------------------------------------------------------------------


class SupervisorError(Exception):
    """Base of the supervisor's errors."""


class WorkerUnavailable(SupervisorError):
    """No worker could be started or reached for this call."""


class TenantAtCapacity(SupervisorError):
    """The tenant's workers are all full and it may not have another one."""


class TenantBackingOff(SupervisorError):
    """The tenant's workers died recently; no new worker before ``until``."""

    def __init__(self, tenant_id: str, until: float) -> None:
        super().__init__(f"tenant {tenant_id} workers are restarting (backoff)")
        self.until = until


# --- restart policy (sans-IO) -------------------------------------------------------------


class Backoff:
    """Exponential restart backoff with a fake-clock-friendly API.

    ``failure(now)`` records a crash and returns when the next start may
    happen; ``ready(now)`` says whether that time has come. A run of
    ``reset_after`` seconds without failure forgets earlier failures.
    """

    def __init__(
        self,
        *,
        base: float = 0.5,
        factor: float = 2.0,
        max_delay: float = 30.0,
        reset_after: float = 60.0,
    ) -> None:
        self.base = base
        self.factor = factor
        self.max_delay = max_delay
        self.reset_after = reset_after
        self.failures = 0
        self._last_failure: float | None = None
        self.next_start = 0.0

    def failure(self, now: float) -> float:
        if self._last_failure is not None and now - self._last_failure >= self.reset_after:
            self.failures = 0
        self.failures += 1
        self._last_failure = now
        delay = min(self.max_delay, self.base * self.factor ** (self.failures - 1))
        self.next_start = now + delay
        return self.next_start

    def ready(self, now: float) -> bool:
        return now >= self.next_start

    def delay(self, now: float) -> float:
        return max(0.0, self.next_start - now)


# --- worker processes ---------------------------------------------------------------------


class WorkerState(enum.Enum):
    STARTING = "starting"  # spawned, loading models
    IDLE = "idle"  # handshake done, no tenant yet (prewarmed)
    BOUND = "bound"  # belongs to a tenant
    STOPPING = "stopping"  # EndWorker sent or being killed
    DEAD = "dead"


class WorkerLost(Exception):
    """Delivered to a call's lease when its worker is gone (the call must fall back)."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"speech worker {pid} lost: {reason}")
        self.pid = pid
        self.reason = reason


LeaseEvent = ipc.Frame | WorkerLost

LEASE_QUEUE = 4000
"""Frames buffered for one call between its worker and its agent (~80 s of audio chunks)."""


class CallLease:
    """One call's link to its worker: frames out, frames in (per call), release."""

    def __init__(self, worker: WorkerProcess, call_id: str, tenant_id: str) -> None:
        self.worker = worker
        self.call_id = call_id
        self.tenant_id = tenant_id
        self._events: deque[LeaseEvent] = deque()
        self._wake = asyncio.Event()
        self.lost: WorkerLost | None = None
        self.ended = False
        self._seq = 0

    @property
    def pid(self) -> int:
        return self.worker.pid

    def offer_audio(self, ulaw: bytes) -> bool:
        """Caller audio to the worker without waiting (dropped and counted when congested)."""
        if self.lost is not None or self.ended:
            return False
        self._seq += 1
        try:
            return self.worker.channel_offer(
                ipc.AudioIn(call_id=self.call_id, seq=self._seq, ulaw=ulaw)
            )
        except ipc.IpcError:
            return False

    async def send(self, frame: ipc.Frame) -> None:
        """Send a control frame (Mark, Dtmf, EndCall); a lost worker makes it a no-op."""
        if self.lost is not None:
            return
        with contextlib.suppress(ipc.ChannelClosed):
            await self.worker.channel_send(frame)

    async def end(self, reason: str) -> None:
        """The call is over on our side: tell the worker and release the slot."""
        if self.ended:
            return
        self.ended = True
        await self.send(ipc.EndCall(call_id=self.call_id, reason=reason))
        self.worker.release(self.call_id)

    def deliver(self, event: LeaseEvent) -> None:
        if isinstance(event, WorkerLost):
            self.lost = event
        elif len(self._events) >= LEASE_QUEUE:
            # The agent stopped reading: this call is broken, not the worker.
            self.lost = WorkerLost(self.worker.pid, "call queue overflow")
            self._events.clear()
            event = self.lost
        self._events.append(event)
        self._wake.set()

    async def events(self) -> AsyncIterator[LeaseEvent]:
        """Frames for this call in order; ends after :class:`WorkerLost` or ``CallEnded``."""
        while True:
            while not self._events:
                self._wake.clear()
                await self._wake.wait()
            event = self._events.popleft()
            yield event
            if isinstance(event, WorkerLost | ipc.CallEnded):
                return


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """How to start a worker; ``--fd N --max-calls M`` are appended."""

    argv: tuple[str, ...] = (sys.executable, "-m", "voxgate.agents.worker")
    env: Mapping[str, str] | None = None
    max_calls: int = 16


class WorkerProcess:
    """One worker process and its frame channel."""

    def __init__(self, supervisor: Supervisor, number: int) -> None:
        self._sup = supervisor
        self.number = number
        self.pid = 0
        self.state = WorkerState.STARTING
        self.tenant_id: str | None = None
        self.limits: WorkerLimits | None = None
        self.calls: dict[str, CallLease] = {}
        self.started_at = supervisor.clock()
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        self.exit_reason = ""
        self.intentional = False
        self.cpu_percent = 0.0
        self.rss_bytes = 0
        self.models: dict[str, str] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._ps: psutil.Process | None = None
        self._channel: ipc.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_pong = 0.0
        self._ping_seq = 0

    # -- channel access for leases --------------------------------------------------------

    def channel_offer(self, frame: ipc.AudioIn) -> bool:
        if self._channel is None or self.state is WorkerState.DEAD:
            return False
        return self._channel.offer(frame)

    async def channel_send(self, frame: ipc.Frame) -> None:
        if self._channel is None or self.state is WorkerState.DEAD:
            raise ipc.ChannelClosed("worker is gone")
        await self._channel.send(frame)

    def release(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        self._sup.notify_capacity()

    # -- lifecycle ---------------------------------------------------------------------------

    async def spawn(self) -> None:
        """Start the process and hand it one end of a socketpair (no waiting for models)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = self._sup.config.command
        argv = [
            *command.argv,
            "--fd",
            str(theirs.fileno()),
            "--max-calls",
            str(command.max_calls),
        ]
        env = dict(os.environ if command.env is None else command.env)
        # Fewer malloc arenas: less virtual memory reserved per thread.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise WorkerUnavailable(f"cannot start a speech worker: {exc}") from exc
        finally:
            theirs.close()
        self.pid = self._proc.pid
        self.limits = self._sup.config.prewarm_limits
        try:
            apply_to_pid(self.pid, self.limits, self._sup.host)
        except LimitsError as exc:
            log.warning("%s", exc)
        with contextlib.suppress(psutil.Error):
            self._ps = psutil.Process(self.pid)
        self._channel = await ipc.Channel.open(ours)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._wait_exit(), name=f"worker-{self.pid}-exit"),
            loop.create_task(self._read(), name=f"worker-{self.pid}-read"),
        ]

    async def _handshake(self, frame: ipc.Frame) -> None:
        if not isinstance(frame, ipc.Hello):
            raise ipc.IpcError(f"expected hello, got {type(frame).__name__}")
        try:
            ipc.check_version(frame.version)
        except ipc.ProtocolVersionError as exc:
            with contextlib.suppress(ipc.IpcError):
                await self.channel_send(ipc.Error(code="version", message=str(exc)))
            raise
        self.models = dict(frame.models)
        await self.channel_send(ipc.HelloAck(version=ipc.PROTOCOL_VERSION, tenant_id=None))
        self._last_pong = self._sup.clock()
        self.state = WorkerState.IDLE
        self.ready.set()
        self._tasks.append(
            asyncio.get_running_loop().create_task(self._health(), name=f"worker-{self.pid}-ping")
        )

    async def _read(self) -> None:
        channel = self._channel
        assert channel is not None
        try:
            first = await asyncio.wait_for(channel.recv(), self._sup.config.start_timeout)
            await self._handshake(first)
            while True:
                frame = await channel.recv()
                self._dispatch(frame)
        except TimeoutError:
            self.kill("no hello within start timeout")
        except ipc.ChannelClosed:
            self._lost("worker closed its channel")
        except ipc.IpcError as exc:
            self.kill(f"protocol error: {exc}")
        finally:
            # A dead channel means a dead worker for every call it held, at once.
            self._lost(self.exit_reason or "worker channel closed")

    def _dispatch(self, frame: ipc.Frame) -> None:
        if isinstance(frame, ipc.Pong):
            self._last_pong = self._sup.clock()
            return
        call_id = getattr(frame, "call_id", None)
        if isinstance(call_id, str):
            lease = self.calls.get(call_id)
            if lease is not None:
                lease.deliver(frame)
                if isinstance(frame, ipc.CallEnded):
                    self.release(call_id)
            return
        if isinstance(frame, ipc.Metric):
            call = frame.labels.get("call")
            lease = self.calls.get(call) if call is not None else None
            if lease is not None:
                lease.deliver(frame)
            return
        if isinstance(frame, ipc.Error):
            log.warning("worker %s: %s: %s", self.pid, frame.code, frame.message)

    def _lost(self, reason: str) -> None:
        if not self.exit_reason:
            self.exit_reason = reason
        if self.state is not WorkerState.DEAD:
            self.state = WorkerState.DEAD
        leases = list(self.calls.values())
        self.calls.clear()
        for lease in leases:
            lease.deliver(WorkerLost(self.pid, self.exit_reason))
        self.ready.set()  # wake anyone waiting for the handshake
        self._sup.worker_gone(self)

    async def _wait_exit(self) -> None:
        assert self._proc is not None
        code = await self._proc.wait()
        if not self.exit_reason:
            self.exit_reason = f"exited with {code}" if code >= 0 else f"killed by signal {-code}"
        self._lost(self.exit_reason)
        if self._channel is not None:
            await self._channel.close(flush=False)
        self.exited.set()

    async def _health(self) -> None:
        config = self._sup.config
        while self.state in (WorkerState.IDLE, WorkerState.BOUND):
            await asyncio.sleep(config.ping_interval)
            now = self._sup.clock()
            if now - self._last_pong > config.ping_timeout and not self._sup.is_throttled(self):
                self.kill("unresponsive (no pong)", kind="unresponsive")
                return
            self.sample()
            limits = self.limits
            if limits is not None and self.rss_bytes > limits.rss_limit_bytes:
                self.kill(
                    f"memory quota exceeded (rss {self.rss_bytes >> 20} MB > "
                    f"{limits.memory_mb} MB)",
                    kind="memory",
                )
                return
            self._ping_seq += 1
            with contextlib.suppress(ipc.IpcError):
                await self.channel_send(ipc.Ping(seq=self._ping_seq, sent_at=time.time()))

    def sample(self) -> None:
        """Refresh CPU% (since the last sample) and RSS from the OS (a few µs)."""
        if self._ps is None:
            return
        try:
            with self._ps.oneshot():
                self.cpu_percent = self._ps.cpu_percent(None)
                self.rss_bytes = self._ps.memory_info().rss
        except psutil.Error:
            pass

    def cpu_seconds(self) -> float:
        if self._ps is None:
            return 0.0
        try:
            times = self._ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def signal(self, signum: int) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self, reason: str, *, kind: str = "other") -> None:
        """SIGKILL now; its calls get :class:`WorkerLost` at once."""
        if self.state is not WorkerState.DEAD:
            self._sup.kills[kind] = self._sup.kills.get(kind, 0) + 1
        if not self.exit_reason:
            self.exit_reason = reason
        log.warning("killing speech worker %s (%s): %s", self.pid, self.tenant_id, reason)
        self.signal(signal.SIGCONT)  # a throttled (stopped) worker must be able to die
        self.signal(signal.SIGKILL)
        self._lost(reason)

    async def stop(self, grace: float) -> None:
        """Graceful: EndWorker (its calls end), wait up to ``grace``, then SIGKILL."""
        self.intentional = True
        if self.state is not WorkerState.DEAD:
            self.state = WorkerState.STOPPING
            self.signal(signal.SIGCONT)
            with contextlib.suppress(ipc.IpcError):
                await asyncio.wait_for(self.channel_send(ipc.EndWorker(reason="stop")), 1.0)
        try:
            await asyncio.wait_for(self.exited.wait(), grace)
        except TimeoutError:
            self.kill("did not stop within the grace period")
            await self.exited.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            pid=self.pid,
            tenant_id=self.tenant_id,
            calls=len(self.calls),
            cpu_percent=round(self.cpu_percent, 1),
            rss_mb=round(self.rss_bytes / (1024 * 1024), 1),
        )


# --- the supervisor ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    command: WorkerCommand = WorkerCommand()
    prewarm: int = 1
    max_workers_total: int = 8
    ping_interval: float = 1.0
    ping_timeout: float = 5.0
    start_timeout: float = 90.0
    stop_grace: float = 5.0
    # Limits a prewarmed worker runs under until a tenant's replace them (lower only).
    prewarm_limits: WorkerLimits = field(
        default_factory=lambda: WorkerLimits(memory_mb=4096, cpu_percent=200)
    )
    call_start_timeout: float = 30.0
    throttle_interval: float = 0.05
    spawn_backoff: Backoff = field(default_factory=Backoff)


@dataclass(slots=True)
class _Placement:
    """One decision of :meth:`Supervisor._placement`: use (or bind) ``worker``,
    ``spawn`` one, refuse, or (nothing set) wait for a starting worker."""

    worker: WorkerProcess | None = None
    bind: bool = False
    spawn: bool = False
    refusal: SupervisorError | None = None


class Supervisor:
    """Per-tenant worker pools with a prewarmed spare pool; see the module docstring."""

    def __init__(
        self,
        host: HostLimits,
        config: SupervisorConfig | None = None,
        *,
        clock: ClockFn = time.monotonic,
    ) -> None:
        self.host = host
        self.config = config if config is not None else SupervisorConfig()
        self.clock = clock
        self.workers: list[WorkerProcess] = []
        self._numbers = 0
        self._tenant_backoff: dict[str, Backoff] = {}
        self._tenant_locks: dict[str, asyncio.Lock] = {}
        self._throttles: dict[str, asyncio.Task[None]] = {}
        self._throttled: set[str] = set()
        self._capacity = asyncio.Event()
        self._refill_wake = asyncio.Event()
        self._refill_task: asyncio.Task[None] | None = None
        self._closing = False
        self.active = False
        self._background: set[asyncio.Task[None]] = set()
        self.restarts = 0
        self.kills: dict[str, int] = {}
        self.crashes = 0

    # -- start / stop ------------------------------------------------------------------------

    async def start(self, *, prewarm_now: bool = False) -> None:
        """Start upkeep; the prewarmed pool fills on :meth:`activate` (or ``prewarm_now``).

        Prewarming is deferred until a ``flow`` agent exists or a first call
        arrives, so a server (or test app) without speech agents starts no
        400 MB worker processes.
        """
        self._refill_task = asyncio.get_running_loop().create_task(
            self._refill(), name="supervisor-refill"
        )
        if prewarm_now:
            self.activate()

    def activate(self) -> None:
        """Keep ``prewarm`` workers ready from now on (idempotent, returns at once)."""
        if not self.active:
            self.active = True
            self._refill_wake.set()

    async def wait_prewarmed(self, count: int | None = None) -> None:
        """Wait until ``count`` (default: the configured pool size) idle workers are ready."""
        want = self.config.prewarm if count is None else count
        while sum(w.state is WorkerState.IDLE for w in self.workers) < want:
            self._capacity.clear()
            await self._capacity.wait()

    async def close(self, grace: float | None = None) -> None:
        """Stop every worker (graceful, then SIGKILL) and the background tasks."""
        self._closing = True
        tasks = [t for t in (self._refill_task, *self._throttles.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._throttles.clear()
        wait = self.config.stop_grace if grace is None else grace
        await asyncio.gather(*(w.stop(wait) for w in list(self.workers)))
        self.workers.clear()

    # -- pool upkeep ---------------------------------------------------------------------------

    def notify_capacity(self) -> None:
        self._capacity.set()

    def worker_gone(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
            if not worker.intentional and not self._closing:
                self.crashes += 1
                now = self.clock()
                if worker.tenant_id is not None:
                    self._tenant_backoff.setdefault(worker.tenant_id, Backoff()).failure(now)
                if worker.state is WorkerState.DEAD and not worker.ready.is_set():
                    self.config.spawn_backoff.failure(now)
        self._capacity.set()
        self._refill_wake.set()

    def _idle(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.state is WorkerState.IDLE]

    def _unbound(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.state in (WorkerState.STARTING, WorkerState.IDLE)]

    async def _refill(self) -> None:
        """Keep ``prewarm`` unbound workers alive, respecting the spawn backoff."""
        backoff = self.config.spawn_backoff
        while True:
            await self._refill_wake.wait()
            self._refill_wake.clear()
            while (
                self.active
                and len(self._unbound()) < self.config.prewarm
                and len(self.workers) < self.config.max_workers_total
            ):
                delay = backoff.delay(self.clock())
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    await self._spawn()
                except WorkerUnavailable as exc:
                    log.error("%s", exc)
                    backoff.failure(self.clock())
                else:
                    self.restarts += 1

    async def _spawn(self) -> WorkerProcess:
        self._numbers += 1
        worker = WorkerProcess(self, self._numbers)
        self.workers.append(worker)
        try:
            await worker.spawn()
        except BaseException:
            with contextlib.suppress(ValueError):
                self.workers.remove(worker)
            raise
        task = asyncio.get_running_loop().create_task(self._announce_ready(worker))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return worker

    async def _announce_ready(self, worker: WorkerProcess) -> None:
        await worker.ready.wait()
        self._capacity.set()

    # -- calls ---------------------------------------------------------------------------------

    def tenant_workers(self, tenant_id: str) -> list[WorkerProcess]:
        return [
            w for w in self.workers if w.tenant_id == tenant_id and w.state is WorkerState.BOUND
        ]

    async def start_call(self, start: ipc.StartCall, quotas: Quotas) -> CallLease:
        """Place a call on one of the tenant's workers (binding a prewarmed one if needed).

        Raises :class:`TenantAtCapacity`, :class:`TenantBackingOff` or
        :class:`WorkerUnavailable`; never blocks the loop.
        """
        tenant_id = start.tenant_id
        self.activate()
        lock = self._tenant_locks.setdefault(tenant_id, asyncio.Lock())
        async with lock, asyncio.timeout(self.config.call_start_timeout):
            worker = await self._choose(tenant_id, quotas)
            lease = CallLease(worker, start.call_id, tenant_id)
            worker.calls[start.call_id] = lease
            try:
                await worker.channel_send(start)
            except ipc.IpcError as exc:
                worker.calls.pop(start.call_id, None)
                raise WorkerUnavailable(f"worker {worker.pid} is gone") from exc
            return lease

    def _placement(self, tenant_id: str, quotas: Quotas) -> _Placement:
        """Where the tenant's next call would go right now (decides, changes nothing)."""
        own = [w for w in self.tenant_workers(tenant_id) if w.limits is not None]
        free = [w for w in own if len(w.calls) < quotas.calls_per_worker]
        if free:
            return _Placement(worker=min(free, key=lambda w: len(w.calls)))
        mine = [w for w in self.workers if w.tenant_id == tenant_id]
        if len(mine) >= quotas.max_workers:
            return _Placement(
                refusal=TenantAtCapacity(
                    f"tenant {tenant_id} runs {len(mine)} workers of "
                    f"{quotas.max_workers} with {quotas.calls_per_worker} calls each"
                )
            )
        backoff = self._tenant_backoff.get(tenant_id)
        if backoff is not None and not backoff.ready(self.clock()):
            return _Placement(refusal=TenantBackingOff(tenant_id, backoff.next_start))
        idle = self._idle()
        if idle:
            return _Placement(worker=idle[0], bind=True)
        if not self._unbound():
            if len(self.workers) < self.config.max_workers_total:
                return _Placement(spawn=True)
            return _Placement(
                refusal=WorkerUnavailable("every speech worker slot on this host is in use")
            )
        return _Placement()  # a worker is starting: wait for it

    def refusal(self, tenant_id: str, quotas: Quotas) -> SupervisorError | None:
        """Why :meth:`start_call` would refuse the tenant a call right now, or None.

        For transports that can still say no before answering (a browser's
        offer): the answer may change by the time the call starts.
        """
        return self._placement(tenant_id, quotas).refusal

    async def _choose(self, tenant_id: str, quotas: Quotas) -> WorkerProcess:
        while True:
            placement = self._placement(tenant_id, quotas)
            if placement.refusal is not None:
                raise placement.refusal
            worker = placement.worker
            if worker is not None:
                if placement.bind:
                    self._bind(worker, tenant_id, quotas)
                    self._refill_wake.set()
                return worker
            if placement.spawn:
                await self._spawn()
            self._refill_wake.set()
            self._capacity.clear()
            await self._capacity.wait()

    def _bind(self, worker: WorkerProcess, tenant_id: str, quotas: Quotas) -> None:
        limits = WorkerLimits(memory_mb=quotas.memory_mb, cpu_percent=quotas.cpu_percent)
        worker.tenant_id = tenant_id
        worker.state = WorkerState.BOUND
        worker.limits = limits
        try:
            apply_to_pid(worker.pid, limits, self.host)
        except LimitsError as exc:
            log.warning("%s", exc)
        if (
            self.host.sigstop_throttle
            and quotas.cpu_percent < 100 * self.host.cpu_count
            and tenant_id not in self._throttles
        ):
            self._throttles[tenant_id] = asyncio.get_running_loop().create_task(
                self._throttle(tenant_id, quotas.cpu_percent), name=f"cpu-throttle-{tenant_id}"
            )
        log.info("speech worker %s bound to tenant %s", worker.pid, tenant_id)

    def is_throttled(self, worker: WorkerProcess) -> bool:
        return worker.tenant_id in self._throttled

    async def _throttle(self, tenant_id: str, cpu_percent: int) -> None:
        """Hold the tenant's workers to their CPU share (see :class:`CpuThrottle`)."""
        throttle = CpuThrottle(cpu_percent / 100)
        gone = 0.0  # CPU time of the tenant's workers that have exited
        seen: dict[int, float] = {}
        while True:
            await asyncio.sleep(self.config.throttle_interval)
            workers = [w for w in self.workers if w.tenant_id == tenant_id]
            current = {w.pid: w.cpu_seconds() for w in workers}
            for pid, cpu in seen.items():
                if pid not in current:
                    gone += cpu
            seen = current
            stop = throttle.observe(self.clock(), gone + sum(current.values()))
            if stop <= 0 or not workers:
                continue
            self._throttled.add(tenant_id)
            try:
                for w in workers:
                    w.signal(signal.SIGSTOP)
                await asyncio.sleep(stop)
            finally:
                for w in workers:
                    w.signal(signal.SIGCONT)
                self._throttled.discard(tenant_id)

    # -- views ---------------------------------------------------------------------------------

    async def status_workers(self) -> list[WorkerStatus]:
        return [w.status() for w in self.workers if w.state is not WorkerState.DEAD]

    def status_limits(self) -> dict[str, Any]:
        return {
            "workers": self.host.describe(),
            "worker_pool": {
                "prewarm": self.config.prewarm,
                "idle": len(self._idle()),
                "max_workers_total": self.config.max_workers_total,
            },
        }

    def find(self, pid: int) -> WorkerProcess | None:
        return next((w for w in self.workers if w.pid == pid), None)

    async def drain(self, within: float) -> None:
        """Let live calls finish (up to ``within`` seconds), then stop every worker."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while any(w.calls for w in self.workers):
                    self._capacity.clear()
                    await self._capacity.wait()
        await self.close()


class WorkerCollector(Collector):
    """Prometheus view of the supervisor's workers (read at scrape time)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        calls = GaugeMetricFamily(
            "voxgate_worker_calls", "Calls on a speech worker.", labels=["pid", "tenant"]
        )
        cpu = GaugeMetricFamily(
            "voxgate_worker_cpu_percent", "CPU use of a speech worker.", labels=["pid", "tenant"]
        )
        rss = GaugeMetricFamily(
            "voxgate_worker_rss_bytes",
            "Resident memory of a speech worker.",
            labels=["pid", "tenant"],
        )
        states = GaugeMetricFamily("voxgate_workers", "Speech workers by state.", labels=["state"])
        for worker in self._sup.workers:
            labels = [str(worker.pid), worker.tenant_id or ""]
            calls.add_metric(labels, len(worker.calls))
            cpu.add_metric(labels, worker.cpu_percent)
            rss.add_metric(labels, worker.rss_bytes)
        for state in WorkerState:
            states.add_metric([state.value], sum(w.state is state for w in self._sup.workers))
        crashes = CounterMetricFamily(
            "voxgate_worker_crashes", "Speech workers that died unexpectedly."
        )
        crashes.add_metric([], self._sup.crashes)
        kills = CounterMetricFamily(
            "voxgate_worker_kills", "Speech workers killed by the supervisor.", labels=["reason"]
        )
        for reason, count in self._sup.kills.items():
            kills.add_metric([reason], count)
        yield from (calls, cpu, rss, states, crashes, kills)
