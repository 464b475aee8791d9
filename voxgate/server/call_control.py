"""Live calls of this process: admission, registry, drain, status and metrics.

* Admission applies the tenant's quotas when a provider offers a call:
  ``max_concurrent_calls`` counts live calls plus calls admitted but not yet
  connected (a reservation, which expires if the media never arrives), and
  ``max_cps`` is a token bucket per tenant (burst = one second's worth).
* The registry knows every live call and its channel, feeds the ``calls``
  section of ``/system/status`` and the Prometheus gauges, and hangs calls up
  when a drain runs out of time.
* :class:`CallRuntime` bundles what the call routes share in one app (the
  registry, the 20 ms ``FrameClock``, the recording writer, the agent host and
  the call records) and runs their background tasks; :func:`install_calls`
  puts it on an application.

This module must not import the speech worker packages: agents plug in through
:class:`~voxgate.server.agent_host.AgentHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from voxgate.admin.status import CallStatus, LiveCounters, SystemStatus
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock, PacedChannel
from voxgate.media.recorder import CallRecorder, RecordingWriter
from voxgate.server.agent_host import AgentHost
from voxgate.server.state import CONFIG, METRICS, SERVICES
from voxgate.tenants.calls import CallRecords
from voxgate.tenants.models import Quotas

__all__ = [
    "CALLS",
    "Admission",
    "CallControl",
    "CallMetrics",
    "CallObserver",
    "CallRuntime",
    "LiveCall",
    "MeasuredFrameClock",
    "TokenBucket",
    "install_calls",
]

log = logging.getLogger("voxgate.calls")

ClockFn = Callable[[], float]

_LATENESS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25,
)  # fmt: skip


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; sans-IO (``now`` given)."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def configure(self, rate: float, burst: float) -> None:
        """Follow a quota change without losing the current level."""
        self._rate = rate
        self._burst = burst
        self._tokens = min(self._tokens, burst)

    @property
    def rate(self) -> float:
        return self._rate


class Admission(enum.Enum):
    ADMITTED = "admitted"
    BUSY_CONCURRENCY = "busy_concurrency"
    BUSY_CPS = "busy_cps"
    DRAINING = "draining"


@dataclass(slots=True, eq=False)
class LiveCall:
    """A call admitted on this process; ``call`` is set once its media connects."""

    call_id: str
    tenant_id: str
    agent_id: str
    provider: str
    admitted_at: float  # wall clock
    reserved_until: float  # monotonic; only meaningful while ``call`` is None
    call: Call | None = None
    channel: PacedChannel | None = None
    recorder: CallRecorder | None = None


class CallObserver(Protocol):
    """Told when a call's media connects and when the call leaves the registry.

    Called synchronously from the registry: must not block (queue and return).
    """

    def started(self, live: LiveCall) -> None: ...

    def ended(self, live: LiveCall) -> None: ...


class CallMetrics:
    """Prometheus series of the call layer, in the app's registry."""

    def __init__(self, registry: CollectorRegistry, *, window: int = 3000) -> None:
        self.lateness = Histogram(
            "voxgate_media_pacing_lateness_seconds",
            "Outbound frame lateness against the 20 ms grid (worst frame of each tick).",
            buckets=_LATENESS_BUCKETS,
            registry=registry,
        )
        self.ws_errors = Counter(
            "voxgate_twilio_ws_errors",
            "Problems on Twilio media WebSockets, by kind (malformed, out_of_order, ...).",
            ["kind"],
            registry=registry,
        )
        self.signature_failures = Counter(
            "voxgate_twilio_signature_failures",
            "Twilio webhooks refused with 403 (bad signature, wrong account, no secret).",
            ["reason"],
            registry=registry,
        )
        self.rejected = Counter(
            "voxgate_calls_rejected",
            "Calls refused at admission, by reason (busy_concurrency, busy_cps, draining).",
            ["tenant", "reason"],
            registry=registry,
        )
        self.ended = Counter(
            "voxgate_calls_ended",
            "Calls that ended, by provider and end reason.",
            ["provider", "reason"],
            registry=registry,
        )
        # Recent per-tick lateness, for exact quantiles (the histogram is coarse).
        self.recent: deque[float] = deque(maxlen=window)

    def observe_lateness(self, seconds: float) -> None:
        self.lateness.observe(seconds)
        self.recent.append(seconds)


class CallControl:
    """Admission control and the registry of live calls (one per process)."""

    def __init__(
        self,
        metrics: CallMetrics | None = None,
        *,
        reservation_ttl: float = 60.0,
        clock: ClockFn = time.monotonic,
        wall: ClockFn = time.time,
    ) -> None:
        self.metrics = metrics
        self._ttl = reservation_ttl
        self._clock = clock
        self._wall = wall
        self._calls: dict[str, LiveCall] = {}
        self._per_tenant: dict[str, int] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Totals of calls that ended, so frame counters never go backwards.
        self.frames_in_done = 0
        self.frames_out_done = 0
        self.inbound_dropped_done = 0
        self.observers: list[CallObserver] = []

    # -- admission -----------------------------------------------------------
    @property
    def draining(self) -> bool:
        return self._draining

    def admit(
        self, tenant_id: str, agent_id: str, provider: str, call_id: str, quotas: Quotas
    ) -> Admission:
        """Reserve a slot for ``call_id`` (idempotent: a retry of an admitted call is admitted)."""
        if call_id in self._calls:
            return Admission.ADMITTED
        if self._draining:
            return self._reject(tenant_id, Admission.DRAINING)
        now = self._clock()
        self._expire(now)
        if self._per_tenant.get(tenant_id, 0) >= quotas.max_concurrent_calls:
            return self._reject(tenant_id, Admission.BUSY_CONCURRENCY)
        bucket = self._buckets.get(tenant_id)
        rate = float(quotas.max_cps)
        if bucket is None:
            bucket = self._buckets[tenant_id] = TokenBucket(rate, max(1.0, rate), now)
        elif bucket.rate != rate:
            bucket.configure(rate, max(1.0, rate))
        if not bucket.take(now):
            return self._reject(tenant_id, Admission.BUSY_CPS)
        self._add(
            LiveCall(
                call_id=call_id,
                tenant_id=tenant_id,
                agent_id=agent_id,
                provider=provider,
                admitted_at=self._wall(),
                reserved_until=now + self._ttl,
            )
        )
        return Admission.ADMITTED

    def _reject(self, tenant_id: str, result: Admission) -> Admission:
        if self.metrics is not None:
            self.metrics.rejected.labels(tenant_id, result.value).inc()
        return result

    def _add(self, live: LiveCall) -> None:
        self._calls[live.call_id] = live
        self._per_tenant[live.tenant_id] = self._per_tenant.get(live.tenant_id, 0) + 1
        self._idle.clear()

    def _expire(self, now: float) -> None:
        stale = [
            c.call_id for c in self._calls.values() if c.call is None and c.reserved_until <= now
        ]
        for call_id in stale:
            self.release(call_id)

    def expire_reservations(self) -> None:
        """Drop admissions whose media never connected."""
        self._expire(self._clock())

    # -- registry --------------------------------------------------------------
    def attach(
        self,
        call: Call,
        channel: PacedChannel,
        recorder: CallRecorder | None = None,
    ) -> LiveCall:
        """The call's media connected: turn its reservation into a live call."""
        live = self._calls.get(call.call_id)
        if live is None:  # reservation expired meanwhile; the call still counts
            live = LiveCall(
                call_id=call.call_id,
                tenant_id=call.tenant_id,
                agent_id=call.agent_id,
                provider=call.provider,
                admitted_at=self._wall(),
                reserved_until=0.0,
            )
            self._add(live)
        connected = live.call is None
        live.call = call
        live.channel = channel
        live.recorder = recorder
        live.admitted_at = call.answered_at or live.admitted_at
        if connected:
            for observer in self.observers:
                observer.started(live)
        return live

    def release(self, call_id: str) -> None:
        """Forget a call (ended, or its reservation lapsed)."""
        live = self._calls.pop(call_id, None)
        if live is None:
            return
        left = self._per_tenant.get(live.tenant_id, 0) - 1
        if left > 0:
            self._per_tenant[live.tenant_id] = left
        else:
            self._per_tenant.pop(live.tenant_id, None)
        if live.channel is not None:
            self.frames_in_done += live.channel.frames_in
            self.frames_out_done += live.channel.frames_out
            self.inbound_dropped_done += live.channel.inbound_dropped
        if live.call is not None and self.metrics is not None:
            reason = live.call.end_reason or EndReason.ERROR
            self.metrics.ended.labels(live.provider, reason.value).inc()
        if live.call is not None:  # reservations that never connected are no call
            for observer in self.observers:
                observer.ended(live)
        if not self._calls:
            self._idle.set()

    def rekey(self, old_id: str, new_id: str) -> None:
        """Move a reservation to the id the provider gave the call (no new rate token)."""
        live = self._calls.pop(old_id, None)
        if live is None:
            raise KeyError(old_id)
        live.call_id = new_id
        self._calls[new_id] = live

    def get(self, call_id: str) -> LiveCall | None:
        return self._calls.get(call_id)

    def __iter__(self) -> Iterator[LiveCall]:
        return iter(list(self._calls.values()))

    def __len__(self) -> int:
        return len(self._calls)

    def live_count(self, tenant_id: str) -> int:
        return self._per_tenant.get(tenant_id, 0)

    def per_tenant(self) -> dict[str, int]:
        return dict(self._per_tenant)

    # -- status ----------------------------------------------------------------
    async def status_calls(self) -> list[CallStatus]:
        """``/system/status`` ``calls``: connected calls, oldest first."""
        calls = [c for c in self._calls.values() if c.call is not None]
        calls.sort(key=lambda c: c.admitted_at)
        return [
            CallStatus(
                id=c.call_id,
                tenant_id=c.tenant_id,
                agent_id=c.agent_id,
                provider=c.provider,
                started_at=c.admitted_at,
            )
            for c in calls
        ]

    def counters(self, tenant_id: str) -> LiveCounters:
        bucket = self._buckets.get(tenant_id)
        return LiveCounters(
            calls=self.live_count(tenant_id),
            calls_per_second=bucket.rate if bucket is not None else 0.0,
        )

    def register_status(self, status: SystemStatus) -> None:
        status.register_calls(self.status_calls)
        status.register_counters(self.counters)

    # -- drain -----------------------------------------------------------------
    def start_drain(self) -> None:
        """Refuse new calls from now on."""
        self._draining = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def drain(self, seconds: float) -> None:
        """Refuse new calls, let live ones finish; after most of ``seconds``, hang up
        the rest (their provider then runs its fallback) and wait for them to go."""
        self.start_drain()
        # Keep a moment at the end for hang-ups to complete inside ``seconds``.
        grace = min(1.0, seconds * 0.2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds - grace)):
                await self._idle.wait()
                return
        live = [c for c in self if c.channel is not None]
        log.warning("drain timeout: hanging up %d live call(s)", len(live))
        for entry in live:
            if entry.channel is not None:
                with contextlib.suppress(Exception):
                    await entry.channel.hangup(EndReason.DRAIN)
        for entry in self:
            if entry.call is None:
                self.release(entry.call_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()


class _LiveCollector(Collector):
    """Series read from live state at scrape time (no per-frame metric cost)."""

    def __init__(self, control: CallControl, metrics: CallMetrics, clock: FrameClock) -> None:
        self._control = control
        self._metrics = metrics
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        control = self._control
        active = GaugeMetricFamily(
            "voxgate_calls_active", "Live and admitted calls, by tenant.", labels=["tenant"]
        )
        for tenant_id, count in sorted(control.per_tenant().items()):
            active.add_metric([tenant_id], count)
        yield active
        frames_in, frames_out = control.frames_in_done, control.frames_out_done
        dropped = control.inbound_dropped_done
        for entry in control:
            if entry.channel is not None:
                frames_in += entry.channel.frames_in
                frames_out += entry.channel.frames_out
                dropped += entry.channel.inbound_dropped
        yield CounterMetricFamily(
            "voxgate_media_inbound_dropped_frames",
            "Caller frames dropped because an agent did not keep up.",
            value=dropped,
        )
        pacer = self._clock.pacer
        yield CounterMetricFamily(
            "voxgate_media_pacing_skipped_slots",
            "20 ms outbound slots skipped because the loop was late (audio stretched).",
            value=pacer.stats.skipped_slots if pacer is not None else 0,
        )
        yield CounterMetricFamily(
            "voxgate_media_frames_in", "20 ms caller frames received.", value=frames_in
        )
        yield CounterMetricFamily(
            "voxgate_media_frames_out", "20 ms agent frames sent.", value=frames_out
        )
        recent = sorted(self._metrics.recent)
        quantiles = GaugeMetricFamily(
            "voxgate_media_pacing_lateness_recent_seconds",
            "Outbound lateness quantiles over the last ~60 s of ticks.",
            labels=["quantile"],
        )
        if recent:
            for q in (0.5, 0.9, 0.99, 1.0):
                index = min(len(recent) - 1, max(0, int(q * len(recent) + 0.5) - 1))
                quantiles.add_metric([str(q)], recent[index])
        yield quantiles


class MeasuredFrameClock(FrameClock):
    """``FrameClock`` that also times each tick: a tick's last frame leaves at
    (tick lateness + tick duration), which is what a caller hears."""

    def __init__(self, phases: int = 4) -> None:
        # Four groups on 5 ms-offset grids: a tick writes a quarter of the calls,
        # so the last frame of a tick leaves a quarter as late.
        super().__init__(phases=phases)
        self.tick_durations: deque[float] = deque(maxlen=4096)

    async def tick(self, frames_due: int = 1) -> None:
        started = time.perf_counter()
        await super().tick(frames_due)
        self.tick_durations.append(time.perf_counter() - started)


@dataclass(slots=True)
class CallRuntime:
    """What the call routes of one app share; see :func:`install_calls`."""

    control: CallControl
    clock: MeasuredFrameClock
    agents: AgentHost
    records: CallRecords
    metrics: CallMetrics
    recordings: bool = True
    housekeeping_interval: float = 0.5
    # One writer thread for every call's recording; started with the app.
    writer: RecordingWriter | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Calls being wound up (record, recording, release); kept referenced until done.
    endings: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.recordings and self.writer is None:
            self.writer = RecordingWriter()
        self._tasks.append(loop.create_task(self.clock.run(), name="voxgate-frame-clock"))
        self._tasks.append(loop.create_task(self._housekeeping(), name="voxgate-call-upkeep"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.writer is not None:
            writer, self.writer = self.writer, None
            await asyncio.to_thread(writer.close)

    def collect_lateness(self) -> None:
        """Move the clock's lateness samples into the metrics (worst frame per tick)."""
        pacer = self.clock.pacer
        if pacer is None:
            return
        samples = pacer.drain_lateness()
        durations = self.clock.tick_durations
        # Both are appended once per tick; pair the newest of each.
        extra = list(durations)[-len(samples) :] if samples else []
        durations.clear()
        offset = len(samples) - len(extra)
        for index, lateness in enumerate(samples):
            spent = extra[index - offset] if index >= offset else 0.0
            self.metrics.observe_lateness(lateness + spent)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.housekeeping_interval)
            try:
                self.collect_lateness()
                self.control.expire_reservations()
                now = loop.time()
                for entry in self.control:
                    if entry.recorder is not None:
                        entry.recorder.tick(now)
            except Exception:  # upkeep must never stop; a bug here is logged, not fatal
                log.exception("call upkeep failed")


CALLS = web.AppKey("voxgate.calls", CallRuntime)


def install_calls(
    app: web.Application,
    *,
    agents: AgentHost | None = None,
    recordings: bool = True,
) -> CallRuntime:
    """Create the app's call runtime (from its config, services and metrics registry),
    register its status providers and start/stop it with the app."""
    services = app[SERVICES]
    metrics = CallMetrics(app[METRICS].registry)
    control = CallControl(metrics)
    clock = MeasuredFrameClock()
    app[METRICS].registry.register(_LiveCollector(control, metrics, clock))
    runtime = CallRuntime(
        control=control,
        clock=clock,
        recordings=recordings,
        agents=agents if agents is not None else AgentHost(),
        records=CallRecords(services.store),
        metrics=metrics,
    )
    control.register_status(services.status)
    app[CALLS] = runtime
    _ = app[CONFIG]  # the routes read it; fail here, at wiring time, if it is missing

    async def on_startup(_app: web.Application) -> None:
        await runtime.start()

    async def on_shutdown(_app: web.Application) -> None:
        # Normally the server's drain hook has already run; this covers apps
        # hosted without it (the wait is then bounded by the drain timeout).
        await control.drain(app[CONFIG].drain_timeout)

    async def on_cleanup(_app: web.Application) -> None:
        await runtime.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return runtime
