"""Concurrency sweep on real models: ``python -m loadtest.bench_speech_concurrency``.

For each N in ``--levels`` (default 1,5,10,15,20,25,30), N simultaneous calls of
the demo receptionist each wait for the greeting and ask one question. The voxgate
app and its speech workers run as in ``bench_turn_latency``; the load caller runs
in **its own process**, so its pacing and gap accounting never share an event loop
(or a GIL) with the media core it measures.

Before the levels, one unreported level binds all ``--workers`` workers of the
tenant, and every level starts with the spare (prewarmed) worker ready, so no
level pays for a worker loading its models. Reported per level, caller side and
server side:

- ``p50_ms``/``p95_ms``: end of the caller's speech -> first agent audio received.
- ``gaps``: playback underruns heard by the caller (a talkspurt ran dry, shorter
  than 1.2 s); ``caller_send_lateness_p95_ms`` is the caller's own pacing error,
  which voids its gap count when large.
- ``server_underruns``: a call's outbound queue ran dry mid-talkspurt and more agent
  audio arrived within 1.2 s: measured at the media core on a virtual playout
  clock per channel (each queued 20 ms frame plays one after the other from when it
  was queued), i.e. the worker delivered too late. ``pacer_*`` are the media
  clock's own stalls (its loop woke late; ``skipped`` slots are frames it could not
  send on time): the media core's lateness, not the worker's.
- CPU: host (all processes, other work included), the app process, the caller
  process and the workers; load average at the start and end; each worker's RSS.

``--no-cache`` serves every reply with live TTS instead of the publish-time
prompt cache. Every level is bounded (caller deadline plus a hard timeout).

``--nice N`` (shared hosts): workers run ``nice`` +5 below the media core by
design, which on a box shared with other nice-0 work hands them a third of a fair
share. With ``--nice -5`` the app and caller run at -5 and the workers are reniced
to 0: the same +5 gap, but other work competes with the workers as an equal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psutil

from loadtest.bench_turn_latency import pct, serve
from loadtest.twilio_caller import CallerConfig, Summary, run_calls
from voxgate.media.channel import PacedChannel
from voxgate.server.call_control import CALLS
from voxgate.server.worker_agent import SPEECH
from voxgate.tenants.store import to_bytes

GAP_MAX_S = 1.2
LEVEL_TIMEOUT_S = 240.0
FRAME_S = 0.020


@dataclass
class OutboundProbe:
    """Server-side underruns, counted on each channel's virtual playout clock."""

    underruns: int = 0
    underrun_ms: list[float] = field(default_factory=list)
    _drain_at: dict[int, float] = field(default_factory=dict)

    def on_send(self, channel: object, frames: int, now: float) -> None:
        key = id(channel)
        drained = self._drain_at.get(key)
        if drained is not None and now > drained + FRAME_S and now - drained < GAP_MAX_S:
            self.underruns += 1
            self.underrun_ms.append(round((now - drained) * 1000, 1))
        start = now if drained is None or drained < now else drained
        self._drain_at[key] = start + frames * FRAME_S

    def on_clear(self, channel: object) -> None:
        self._drain_at.pop(id(channel), None)

    def reset(self) -> None:
        self.underruns = 0
        self.underrun_ms.clear()
        self._drain_at.clear()


@contextlib.contextmanager
def probe_outbound(probe: OutboundProbe) -> Iterator[None]:
    """Observe every paced channel's queued audio (wraps ``send``/``clear``)."""
    send, clear = PacedChannel.send, PacedChannel.clear

    async def observed_send(self: PacedChannel, audio: Any) -> None:
        data = audio if isinstance(audio, bytes | bytearray) else audio.to_ulaw()
        probe.on_send(self, len(data) // 160, time.monotonic())
        await send(self, audio)

    def observed_clear(self: PacedChannel) -> list[str]:
        probe.on_clear(self)
        return clear(self)

    PacedChannel.send = observed_send  # type: ignore[method-assign]
    PacedChannel.clear = observed_clear  # type: ignore[method-assign]
    try:
        yield
    finally:
        PacedChannel.send = send  # type: ignore[method-assign]
        PacedChannel.clear = clear  # type: ignore[method-assign]


async def call_in_subprocess(config: CallerConfig) -> tuple[Summary, float]:
    """Run the load caller in a child process; its summary and its CPU seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.bench_speech_concurrency",
        "--caller",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    ps = psutil.Process(proc.pid)
    cpu = 0.0

    async def watch() -> None:
        nonlocal cpu
        with contextlib.suppress(psutil.Error):
            while proc.returncode is None:
                times = ps.cpu_times()
                cpu = times.user + times.system
                await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    out, _ = await proc.communicate(msgspec.json.encode(config))
    watcher.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"caller process failed ({proc.returncode})")
    return msgspec.json.decode(out, type=Summary), cpu


def _cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


async def _server_turn_latencies(bench: Any, skip: set[bytes]) -> dict[bytes, list[float]]:
    """ "turn_latency" events (seconds) per call-events key, except the keys in ``skip``."""
    redis = bench.services.store.redis
    found: dict[bytes, list[float]] = {}
    for key in await redis.keys(f"vg:{{{bench.tenant_id}}}:call_events:*"):
        if to_bytes(key) in skip:
            continue
        values = found.setdefault(to_bytes(key), [])
        for raw in await redis.lrange(key, 0, -1):
            entry = json.loads(to_bytes(raw))
            if entry.get("kind") == "turn_latency":
                values.append(float(entry["detail"]))
    return found


def _renice(pid: int, value: int) -> None:
    """Every thread of ``pid`` (Linux keeps a nice value per thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            if os.getpriority(os.PRIO_PROCESS, tid) != value:
                os.setpriority(os.PRIO_PROCESS, tid, value)


async def run_level(
    bench: Any,
    n: int,
    *,
    cache: bool,
    probe: OutboundProbe,
    renice: int | None = None,
    ramp_s: float = 0.0,
) -> dict[str, Any]:
    supervisor = bench.app[SPEECH].supervisor
    clock = bench.app[CALLS].clock
    pacer = clock.pacer
    before_pacer = (
        (pacer.stats.resyncs, pacer.stats.skipped_slots, pacer.stats.late_frames)
        if pacer is not None
        else (0, 0, 0)
    )
    probe.reset()
    rss: dict[int, float] = {}
    host_cpu: list[float] = []
    stop = asyncio.Event()
    worker_pids = [w.pid for w in await supervisor.status_workers()]
    old_calls = set(await _server_turn_latencies(bench, set()))
    if renice is not None:
        for pid in worker_pids:
            _renice(pid, renice)
    app_proc = psutil.Process()
    app_cpu0 = sum(app_proc.cpu_times()[:2])
    worker_cpu0 = _cpu_s(worker_pids)
    load0 = os.getloadavg()
    started = time.monotonic()

    async def sample() -> None:
        psutil.cpu_percent(None)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            host_cpu.append(psutil.cpu_percent(None))
            for w in await supervisor.status_workers():
                if w.pid not in worker_pids:
                    worker_pids.append(w.pid)
                if renice is not None:
                    _renice(w.pid, renice)
                rss[w.pid] = max(rss.get(w.pid, 0.0), w.rss_mb)

    sampler = asyncio.create_task(sample())
    config = bench.caller(
        audio=("opening_hours_saturday",),
        calls=n,
        concurrency=n,
        wait_for_greeting=True,
        gap_max_s=GAP_MAX_S,
        silence_after_s=6.0,
        greeting_timeout_s=30.0,
        ramp_s=ramp_s,
    )
    try:
        async with asyncio.timeout(LEVEL_TIMEOUT_S):
            summary, caller_cpu = await call_in_subprocess(config)
    finally:
        stop.set()
        await sampler
    wall = time.monotonic() - started
    app_cpu = sum(app_proc.cpu_times()[:2]) - app_cpu0
    worker_cpu = _cpu_s(worker_pids) - worker_cpu0
    if pacer is None:
        pacer = clock.pacer
    after_pacer = (
        (pacer.stats.resyncs, pacer.stats.skipped_slots, pacer.stats.late_frames)
        if pacer is not None
        else (0, 0, 0)
    )
    lat = summary.turn_latency_received_ms
    workers = await supervisor.status_workers()
    # The worker's own end-to-end measure per turn (speech end -> first AudioOut),
    # recorded as a "turn_latency" call event when the first audio leaves; shortly
    # after, so wait for it (bounded).
    server_e2e: list[float] = []
    for _ in range(20):
        again = [v for vs in (await _server_turn_latencies(bench, old_calls)).values() for v in vs]
        if server_e2e and len(again) == len(server_e2e):
            break
        server_e2e = again
        await asyncio.sleep(0.25)
    return {
        "calls": n,
        "cache": cache,
        "ramp_s": ramp_s,
        "answered": f"{summary.turns_answered}/{summary.turns}",
        "p50_ms": lat.p50,
        "p95_ms": lat.p95,
        "gaps": summary.gaps,
        "server_underruns": probe.underruns,
        "server_underrun_ms_p95": pct(probe.underrun_ms, 0.95),
        "pacer_resyncs": after_pacer[0] - before_pacer[0],
        "pacer_skipped": after_pacer[1] - before_pacer[1],
        "caller_send_lateness_p95_ms": summary.send_lateness_ms.p95,
        "outcomes": summary.outcomes,
        "first_agent_audio_p95_ms": summary.first_agent_audio_ms.p95,
        "server_e2e_p50_ms": _ms(pct(server_e2e, 0.5)),
        "server_e2e_p95_ms": _ms(pct(server_e2e, 0.95)),
        "caller_ms_sorted": sorted(
            round(t.reply_received_ms)
            for r in summary.call_reports
            for t in r.turns
            if t.reply_received_ms is not None
        ),
        "server_e2e_ms_sorted": sorted(round(v * 1000) for v in server_e2e),
        "host_cpu_percent_mean": round(sum(host_cpu) / len(host_cpu), 1) if host_cpu else None,
        "cores_used": {
            "app": round(app_cpu / wall, 2),
            "caller": round(caller_cpu / wall, 2),
            "workers": round(worker_cpu / wall, 2),
        },
        "load_avg_start_end": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "worker_rss_mb_max": max(rss.values()) if rss else None,
        "worker_rss_mb": {str(pid): mb for pid, mb in rss.items()},
        "workers": len(workers),
        "wall_s": round(wall, 1),
    }


async def sweep(
    levels: Sequence[int],
    *,
    cache: bool,
    workers: int,
    calls_per_worker: int | None = None,
    nice: int | None = None,
    ramp_s: float = 10.0,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    renice = None
    if nice is not None:
        _renice(os.getpid(), nice)  # the caller process inherits it
        renice = nice + 5
    per_worker = calls_per_worker or max(1, -(-max(levels) // workers))
    probe = OutboundProbe()
    async with serve(cache=cache, workers=workers, calls_per_worker=per_worker) as bench:
        with probe_outbound(probe):
            if workers > 1:
                # Bind every worker of the tenant first (not reported): otherwise the
                # first level that needs another worker binds the spare and the
                # supervisor loads a new spare's models during that level.
                await run_level(
                    bench, per_worker * (workers - 1) + 1, cache=cache, probe=probe, ramp_s=ramp_s
                )
            for n in levels:
                async with asyncio.timeout(180):
                    await bench.app[SPEECH].supervisor.wait_prewarmed()
                rows.append(
                    await run_level(
                        bench,
                        n,
                        cache=cache,
                        probe=probe,
                        renice=renice,
                        ramp_s=ramp_s,
                    )
                )
                print(msgspec.json.encode(rows[-1]).decode(), flush=True)
    return rows


async def _caller_main() -> int:
    config = msgspec.json.decode(sys.stdin.buffer.read(), type=CallerConfig)
    summary = await run_calls(config)
    sys.stdout.buffer.write(msgspec.json.encode(summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_speech_concurrency")
    parser.add_argument("--levels", default="1,5,10,15,20,25,30")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--calls-per-worker", type=int, default=None)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--nice", type=int, default=None, help="see the module docstring")
    parser.add_argument("--ramp", type=float, default=10.0, help="call starts spread over (s)")
    parser.add_argument("--caller", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.caller:
        return asyncio.run(_caller_main())
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    asyncio.run(
        sweep(
            levels,
            cache=not args.no_cache,
            workers=args.workers,
            calls_per_worker=args.calls_per_worker,
            nice=args.nice,
            ramp_s=args.ramp,
        )
    )
    return 0


__all__ = ["OutboundProbe", "pct", "sweep"]

if __name__ == "__main__":
    raise SystemExit(main())
