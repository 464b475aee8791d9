"""SIP benchmarks against a real in-process server pinned to one core, with sipp on another.

``python -m loadtest.sip_bench rate --rates 50,100,200,300 --calls 600``
    call-rate sweep: sipp's built-in UAC (INVITE -> 200 -> ACK -> 2 s -> BYE)
    against the ``echo`` agent; reports setup latency (INVITE -> 200) p50/p99
    and failed calls per rate.
``python -m loadtest.sip_bench rtp --calls 250``
    concurrent RTP calls: sipp plays a 16 s recording per call to the echo
    agent, ``--calls`` at once; reports the FrameClock's send-pacing lateness
    (p50/p99/max over the busy period) and RSS per call.

The server runs with the gateway answering at once (no ring delay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import psutil

from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.runtime import Listener, Server
from voxgate.server.services import Services
from voxgate.server.sip_gateway import SipListener, start_sip
from voxgate.sip.transaction import Transport
from voxgate.tenants.models import NumberCreate, Quotas, TenantCreate

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "sip" / "scenarios"
NUMBER = "+15550001000"


freeze_heap = False


async def _server(data_dir: Path, redis_url: str | None) -> tuple[Server, SipListener]:
    # An RTP range of its own: other servers on the machine commonly use 40000+.
    config = Config(
        data_dir=data_dir, http_port=0, sip_port=0, rtp_ports=(52000, 55999), redis_url=redis_url
    )
    holder: list[SipListener] = []
    server: Server

    async def hook(cfg: Config, services: Services) -> Listener:
        runner = server._runner
        assert runner is not None
        listener = await start_sip(cfg, services, runner.app[CALLS], ring_seconds=0.0)
        holder.append(listener)
        return listener

    server = Server(config, listeners=[hook])
    await server.start()
    services = server.services
    redis_pid = services.store.embedded_pid
    if redis_pid is not None:
        # The embedded redis-server inherits the server's core-0 pinning; on
        # the media core it would compete with the loop it serves.
        os.sched_setaffinity(redis_pid, {1})
        print(f"embedded redis-server pid {redis_pid} pinned to core 1", flush=True)
    tenant = await services.registry.create(
        TenantCreate(name="bench", quotas=Quotas(max_concurrent_calls=2000, max_cps=1000)), "bench"
    )
    echo = await services.agents.create(tenant.id, "echo", "echo", "echo", None, [])
    await services.numbers.create(
        tenant.id, NumberCreate(number=NUMBER, provider="sip", agent_id=echo.id)
    )
    if freeze_heap:
        gc.collect()
        gc.freeze()
        print(f"start-up heap frozen: {gc.get_freeze_count()} objects", flush=True)
    return server, holder[0]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class SippRun(msgspec.Struct):
    code: int
    output: str
    sipp_cpu: float  # seconds of CPU sipp used (user + system)
    server_cpu: float  # seconds of CPU this process used meanwhile
    wall: float


async def _sipp(args: list[str], cwd: Path) -> SippRun:
    me = psutil.Process()
    before = me.cpu_times()
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", "sipp", *args,
        cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    sipp_cpu = 0.0

    async def sample() -> None:
        nonlocal sipp_cpu
        # taskset execs sipp in place, so the pid is sipp's own.
        with contextlib.suppress(psutil.Error):
            child = psutil.Process(proc.pid)
            while True:
                times = child.cpu_times()
                sipp_cpu = times.user + times.system
                await asyncio.sleep(0.5)

    sampler = asyncio.get_running_loop().create_task(sample())
    out, _ = await proc.communicate()
    sampler.cancel()
    after = me.cpu_times()
    return SippRun(
        code=proc.returncode or 0,
        output=out.decode(errors="replace"),
        sipp_cpu=sipp_cpu,
        server_cpu=(after.user + after.system) - (before.user + before.system),
        wall=time.monotonic() - started,
    )


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _error_reasons(run: Path) -> dict[str, int]:
    """Counts of sipp's failure reasons from its ``-trace_err`` log."""
    reasons: dict[str, int] = {}
    for path in run.glob("*errors.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "received '" in line:
                key = "received " + line.split("received '", 1)[1][:40]
            elif "timeout" in line.lower():
                key = "timeout"
            elif "Aborting" in line or "rror" in line:
                key = " ".join(w for w in line.split() if not any(c.isdigit() for c in w))[:60]
            else:
                continue  # the message dump under each error line
            reasons[key] = reasons.get(key, 0) + 1
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])


async def rate_sweep(rates: list[int], calls: int, redis_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, sip = await _server(work / "data", redis_url)
        port = sip.transports.local_address(Transport.UDP)
        assert port is not None
        routes = sip.gateway.routes
        try:
            for rate in rates:
                run = work / f"r{rate}"
                run.mkdir()
                print(f"rate {rate}/s: starting, {_load()}", flush=True)
                result = await _sipp(
                    [
                        f"127.0.0.1:{port[1]}", "-sn", "uac", "-s", NUMBER, "-i", "127.0.0.1",
                        "-p", "0", "-r", str(rate), "-m", str(calls), "-d", "2000",
                        "-l", str(rate * 4), "-timeout", "120", "-nostdin", "-trace_rtt",
                        "-rtt_freq", "1", "-trace_stat", "-trace_err", "-max_socket", "4096",
                    ],
                    run,
                )  # fmt: skip
                latencies: list[float] = []
                for path in run.glob("*rtt*"):
                    with path.open() as fh:
                        for row in csv.reader(fh, delimiter=";"):
                            # Date_ms;response_time_ms;rtd_no (header row skipped)
                            if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                                latencies.append(float(row[1]))
                failed = succ = "?"
                for path in run.glob("*_.csv"):
                    rows = list(csv.DictReader(path.open(), delimiter=";"))
                    if rows:
                        failed = rows[-1].get("FailedCall(C)", "?")
                        succ = rows[-1].get("SuccessfulCall(C)", "?")
                print(
                    f"rate {rate}/s calls {calls}: exit {result.code} successful {succ} "
                    f"failed {failed} setup p50 {_pct(latencies, 0.5):.1f} ms "
                    f"p99 {_pct(latencies, 0.99):.1f} ms (n={len(latencies)}); "
                    f"server CPU {result.server_cpu / result.wall:.0%}, "
                    f"sipp CPU {result.sipp_cpu / result.wall:.0%} of a core over "
                    f"{result.wall:.0f} s; rejected by server {sip.gateway.rejected}; route cache "
                    f"hits {routes.hits} misses {routes.misses} stale {routes.stale_served}; "
                    f"{_load()}",
                    flush=True,
                )
                if failed not in ("0", "?"):
                    print(f"  sipp failure reasons: {_error_reasons(run)}", flush=True)
                await sip.gateway.wait_idle()
        finally:
            await server.stop()


async def rtp_calls(calls: int, redis_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server, sip = await _server(work / "data", redis_url)
        runtime = sip.gateway.runtime
        port = sip.transports.local_address(Transport.UDP)
        assert port is not None
        proc = psutil.Process()
        rss_idle = proc.memory_info().rss
        peak_calls = 0
        rss_peak = rss_idle
        lateness: list[float] = []
        windows: list[tuple[float, int, float]] = []  # (time, live calls, worst ms)

        async def watch() -> None:
            nonlocal peak_calls, rss_peak
            while True:
                await asyncio.sleep(0.5)
                live = sip.gateway.live_calls
                # The server's own figure (what its /metrics histogram gets):
                # per tick, how late the tick started plus how long it took,
                # i.e. when the tick's last frame left.  The housekeeping task
                # moves the clock's samples there every 0.5 s.
                recent = runtime.metrics.recent
                samples = list(recent)
                recent.clear()
                if samples:
                    windows.append((time.monotonic(), live, max(samples) * 1000))
                if live >= calls * 0.9:
                    lateness.extend(samples)
                if live > peak_calls:
                    peak_calls = live
                    rss_peak = proc.memory_info().rss

        gc_pauses: list[float] = []
        gc_started = 0.0

        def on_gc(phase: str, info: dict[str, int]) -> None:
            nonlocal gc_started
            if phase == "start":
                gc_started = time.perf_counter()
            elif sip.gateway.live_calls >= calls * 0.9:
                gc_pauses.append(time.perf_counter() - gc_started)

        gc.callbacks.append(on_gc)
        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            print(f"starting, {_load()}", flush=True)
            result = await _sipp(
                [
                    f"127.0.0.1:{port[1]}", "-sf", str(SCENARIOS / "uac_conversation_play.xml"),
                    "-s", NUMBER, "-i", "127.0.0.1", "-p", "0", "-mi", "127.0.0.1",
                    "-r", "50", "-l", str(calls), "-m", str(calls), "-timeout", "120",
                    "-nostdin", "-max_socket", "4096", "-trace_err",
                ],
                work,
            )  # fmt: skip
        finally:
            watcher.cancel()
            gc.callbacks.remove(on_gc)
            await server.stop()
        ms = [x * 1000 for x in lateness]
        print(
            f"sipp exit {result.code}; peak concurrent calls {peak_calls}; "
            f"server CPU {result.server_cpu / result.wall:.0%}, "
            f"sipp CPU {result.sipp_cpu / result.wall:.0%} of a core; {_load()}"
        )
        print(
            f"send-pacing lateness (tick start lateness + tick duration) over {len(ms)} "
            f"ticks at >=90% of {calls} calls live: "
            f"p50 {_pct(ms, 0.5):.2f} ms p99 {_pct(ms, 0.99):.2f} ms "
            f"max {max(ms, default=0):.2f} ms"
        )
        if windows:
            t0 = windows[0][0]
            worst = sorted(windows, key=lambda w: -w[2])[:6]
            print(
                "worst 0.5 s windows (s from first tick, live calls, ms): "
                + ", ".join(f"{t - t0:.1f}/{n}/{w:.0f}" for t, n, w in sorted(worst))
            )
        print(
            f"GC passes at >=90% load: {len(gc_pauses)}, longest "
            f"{max(gc_pauses, default=0) * 1000:.1f} ms"
        )
        if peak_calls:
            per_call = (rss_peak - rss_idle) / peak_calls / 1024
            print(f"RSS idle {rss_idle / 2**20:.1f} MiB, at peak {rss_peak / 2**20:.1f} MiB: "
                  f"{per_call:.0f} KiB per call")  # fmt: skip
        if result.code != 0:
            print(result.output[-2000:])
            print(f"sipp failure reasons: {_error_reasons(work)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.sip_bench")
    sub = parser.add_subparsers(dest="mode", required=True)
    rate = sub.add_parser("rate")
    rate.add_argument("--rates", default="50,100,200,300")
    rate.add_argument("--calls", type=int, default=600)
    rtp = sub.add_parser("rtp")
    rtp.add_argument("--calls", type=int, default=250)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the server is up (the start-up heap leaves full GC passes)",
    )
    parser.add_argument(
        "--redis-url", default=None, help="external Redis (default: the embedded one, on core 1)"
    )
    args = parser.parse_args(argv)
    global freeze_heap
    freeze_heap = args.gc_freeze
    os.sched_setaffinity(0, {0})  # the server on core 0; sipp runs on core 1
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.mode == "rate":
        asyncio.run(rate_sweep([int(r) for r in args.rates.split(",")], args.calls, args.redis_url))
    else:
        asyncio.run(rtp_calls(args.calls, args.redis_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
