"""Media-only concurrency benchmark: Twilio Media Streams calls on the echo agent.

Starts ``voxgate serve`` pinned to one core (``taskset -c SERVER_CPU``), pins
itself (the load caller) to another, and for each N runs N concurrent calls of
real caller audio in real time. Per N it reports, from the server's own
metrics and process: outbound pacing lateness p50/p99 (worst frame of each
20 ms tick), frames dropped (inbound drops plus skipped outbound slots), CPU
per call and RSS per call; and from the caller: whether its own sending kept
real time (if it did not, the run says so instead of blaming the server).

    python -m loadtest.bench_twilio_echo [--calls 50,100,200,300] [--hold 20]

Bounded: every step stops by itself (per-call and per-run deadlines).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec
import psutil

from loadtest.twilio_caller import CallerConfig, run_calls
from loadtest.twilio_fleet import run_fleet

ADMIN = "bench-admin-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
NUMBER = "+15550100042"


class Step(msgspec.Struct, kw_only=True):
    calls: int
    completed: int
    lateness_p50_ms: float | None
    lateness_p99_ms: float | None
    lateness_max_ms: float | None
    inbound_dropped: int
    skipped_slots: int
    frames_out: int
    cpu_percent_per_call: float
    server_cpu_percent: float
    rss_kb_per_call: float
    caller_send_lateness_p99_ms: float | None
    caller_jitter_p99_ms: float | None
    caller_gaps: int
    caller_cpu_percent: float = 0.0
    load_average: float = 0.0  # 1-minute load average at the end of the window
    # Time the server's event-loop thread was runnable but waiting for its
    # core (other processes on it), per second of the window: a contended
    # core shows up here, not as the server's CPU.
    server_runq_wait_ms_per_s: float | None = None


def runqueue_wait(pid: int) -> float | None:
    """Seconds the thread ``pid`` has spent runnable but not running (Linux schedstat)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
        return int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


_SAMPLE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            values[f"{name}{{{labels}}}" if labels else name] = float(value)
    return values


async def provision(session: aiohttp.ClientSession, http: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "bench", "quotas": {"max_concurrent_calls": 2000, "max_cps": 1000}}
    async with session.post(f"{http}/system/tenants", json=body, headers=admin) as r:
        created = await r.json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    base = f"{http}/tenants/{created['id']}/api"
    async with session.post(
        f"{base}/agents", json={"name": "echo", "template": "echo"}, headers=headers
    ) as r:
        agent = await r.json()
    number = {"number": NUMBER, "provider": "twilio", "agent_id": agent["id"]}
    async with session.post(f"{base}/numbers", json=number, headers=headers) as r:
        if r.status != 201:
            raise RuntimeError(f"number: {r.status} {await r.text()}")
    secret = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    async with session.put(f"{base}/secrets/twilio", json=secret, headers=headers) as r:
        if r.status != 204:
            raise RuntimeError(f"secret: {r.status}")


async def scrape(session: aiohttp.ClientSession, http: str) -> dict[str, float]:
    async with session.get(f"{http}/metrics") as r:
        return parse_metrics(await r.text())


class _CallerOutcome(msgspec.Struct, kw_only=True):
    completed: int
    send_lateness_p99_ms: float | None
    jitter_p99_ms: float | None
    gaps: int


async def _drive(config: CallerConfig, caller: str, phases: int = 10) -> _CallerOutcome:
    if caller == "fleet":
        fleet = await run_fleet(config, phases=phases)
        if fleet.errors:
            print(f"caller errors: {fleet.errors[:5]}", file=sys.stderr, flush=True)
        return _CallerOutcome(
            completed=fleet.completed,
            send_lateness_p99_ms=fleet.send_lateness_ms.p99,
            jitter_p99_ms=fleet.jitter_ms.p99,
            gaps=fleet.gaps,
        )
    summary = await run_calls(config)
    return _CallerOutcome(
        completed=summary.outcomes.get("completed", 0),
        send_lateness_p99_ms=summary.send_lateness_ms.p99,
        jitter_p99_ms=summary.jitter_ms.p99,
        gaps=summary.gaps,
    )


async def run_step(
    session: aiohttp.ClientSession,
    http: str,
    server: psutil.Process,
    n: int,
    hold: float,
    caller: str = "fleet",
    phases: int = 10,
) -> Step:
    ramp = min(10.0, max(2.0, n / 30))
    config = CallerConfig(
        url=http,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        to=NUMBER,
        calls=n,
        concurrency=n,
        ramp_s=ramp,
        audio=("book_appointment", "account_balance", "call_me_back"),
        duration_s=ramp + hold,
        silence_before_s=0.0,
        max_call_s=ramp + hold + 30,
        deadline_s=2 * ramp + hold + 60,
    )
    before = await scrape(session, http)
    calls = asyncio.ensure_future(_drive(config, caller, phases))
    me = psutil.Process()
    # Steady state: every call is up between ``ramp`` and ``ramp + hold``.
    await asyncio.sleep(ramp + 1.0)
    steady = await scrape(session, http)
    rss_before_window = server.memory_info().rss
    wait0 = runqueue_wait(server.pid)
    cpu0, own0, t0 = server.cpu_times(), me.cpu_times(), time.monotonic()
    await asyncio.sleep(max(1.0, hold - 3.0))
    cpu1, own1, t1 = server.cpu_times(), me.cpu_times(), time.monotonic()
    wait1 = runqueue_wait(server.pid)
    load = os.getloadavg()[0]
    rss_steady = max(server.memory_info().rss, rss_before_window)
    middle = await scrape(session, http)
    summary = await calls
    after = await scrape(session, http)
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    server_cpu = busy / (t1 - t0) * 100
    own = (own1.user + own1.system) - (own0.user + own0.system)
    live = middle.get('voxgate_calls_active{tenant="' + _tenant_label(middle) + '"}', float(n))
    baseline_rss = BASELINE_RSS.get("rss", rss_steady)
    return Step(
        calls=n,
        completed=summary.completed,
        lateness_p50_ms=_ms(bucket_quantile(steady, middle, 0.5)),
        lateness_p99_ms=_ms(bucket_quantile(steady, middle, 0.99)),
        lateness_max_ms=_ms(bucket_quantile(steady, middle, 1.0)),
        inbound_dropped=int(
            after.get("voxgate_media_inbound_dropped_frames_total", 0)
            - before.get("voxgate_media_inbound_dropped_frames_total", 0)
        ),
        skipped_slots=int(
            after.get("voxgate_media_pacing_skipped_slots_total", 0)
            - before.get("voxgate_media_pacing_skipped_slots_total", 0)
        ),
        frames_out=int(
            after.get("voxgate_media_frames_out_total", 0)
            - before.get("voxgate_media_frames_out_total", 0)
        ),
        cpu_percent_per_call=round(server_cpu / max(1.0, live), 3),
        server_cpu_percent=round(server_cpu, 1),
        rss_kb_per_call=round((rss_steady - baseline_rss) / 1024 / max(1.0, live), 1),
        caller_send_lateness_p99_ms=summary.send_lateness_p99_ms,
        caller_jitter_p99_ms=summary.jitter_p99_ms,
        caller_gaps=summary.gaps,
        caller_cpu_percent=round(own / (t1 - t0) * 100, 1),
        load_average=round(load, 2),
        server_runq_wait_ms_per_s=(
            None if wait0 is None or wait1 is None else round((wait1 - wait0) / (t1 - t0) * 1000, 1)
        ),
    )


BASELINE_RSS: dict[str, int] = {}
_BUCKET = 'voxgate_media_pacing_lateness_seconds_bucket{le="'


def bucket_quantile(start: dict[str, float], end: dict[str, float], q: float) -> float | None:
    """Upper bound (bucket edge) of the ``q`` quantile of lateness observed
    between two scrapes; None when nothing was observed."""
    edges = sorted(
        (float(key[len(_BUCKET) : -2]), end[key] - start.get(key, 0.0))
        for key in end
        if key.startswith(_BUCKET) and "+Inf" not in key
    )
    total_key = _BUCKET + '+Inf"}'
    total = end.get(total_key, 0.0) - start.get(total_key, 0.0)
    if total <= 0:
        return None
    for edge, count in edges:
        if count >= q * total:
            return edge
    return float("inf")


def _tenant_label(samples: dict[str, float]) -> str:
    for key in samples:
        if key.startswith('voxgate_calls_active{tenant="'):
            return key.split('"')[1]
    return ""


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def pin_redis(server: psutil.Process, cpu: int) -> list[int]:
    """Move the embedded redis-server off the server's core (it inherits the
    ``taskset`` pinning): Redis work would otherwise be billed to the media core."""
    moved: list[int] = []
    for child in server.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "redis" in child.name():
                os.sched_setaffinity(child.pid, {cpu})
                moved.append(child.pid)
    return moved


async def bench(
    calls: Sequence[int],
    hold: float,
    server_cpu: int,
    caller_cpu: int,
    caller: str = "fleet",
    priority: int = 0,
    phases: int = 10,
    realtime: int = 0,
) -> list[Step]:
    os.sched_setaffinity(0, {caller_cpu})
    data_dir = Path(tempfile.mkdtemp(prefix="vg-bench-"))
    ready_file = data_dir / "ready.json"
    env = {**os.environ, "VOXGATE_ADMIN_TOKEN": ADMIN, "VOXGATE_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        *(("chrt", "-f", str(realtime)) if realtime else ()),
        "nice", "-n", str(priority), "taskset", "-c", str(server_cpu), sys.executable, "-c",
        "from voxgate.server.cli import main; raise SystemExit(main())",
        "serve", "--http-port", "0", "--sip-port", "0", "--data-dir", str(data_dir / "data"),
        "--ready-file", str(ready_file), "--drain-timeout", "5",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if priority:
        # The caller too (after spawning the server, which got ``nice -n``):
        # neither side is then preempted by unrelated jobs on a shared host.
        os.setpriority(os.PRIO_PROCESS, 0, priority)
    if realtime:
        # SCHED_FIFO: on a shared host a nice value still leaves each wake-up
        # waiting for a competitor's time slice; the kernel caps real-time
        # tasks at 95 % of a core, so the rest of the host keeps running.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime))
    steps: list[Step] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"listening on" not in (line := await proc.stdout.readline()):
                if not line:
                    raise RuntimeError("server exited during start-up")
        http = json.loads(ready_file.read_text())["http"]
        server = psutil.Process(proc.pid)
        moved = pin_redis(server, caller_cpu)
        print(f"embedded redis-server {moved} pinned to core {caller_cpu}", flush=True)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await provision(session, http)
            BASELINE_RSS["rss"] = server.memory_info().rss
            for n in calls:
                step = await run_step(session, http, server, n, hold, caller, phases)
                steps.append(step)
                print(json.dumps(msgspec.to_builtins(step)), flush=True)
    finally:
        await stop_server(proc, data_dir)
    return steps


async def stop_server(proc: asyncio.subprocess.Process, data_dir: Path) -> None:
    """SIGTERM a benchmarked ``voxgate serve`` (SIGKILL after 20 s) and remove its data."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


def render(steps: Sequence[Step]) -> str:
    lines = [
        "| N | completed | lateness p50 ≤ ms | p99 ≤ ms | max ≤ ms | dropped in | skipped slots "
        "| server CPU % | CPU %/call | RSS KB/call | caller send p99 ms | caller gaps "
        "| caller CPU % | load avg | server run-queue wait ms/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {s.calls} | {s.completed} | {s.lateness_p50_ms} | {s.lateness_p99_ms} "
            f"| {s.lateness_max_ms} | {s.inbound_dropped} | {s.skipped_slots} "
            f"| {s.server_cpu_percent} | {s.cpu_percent_per_call} | {s.rss_kb_per_call} "
            f"| {s.caller_send_lateness_p99_ms} | {s.caller_gaps} "
            f"| {s.caller_cpu_percent} | {s.load_average} | {s.server_runq_wait_ms_per_s} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="50,100,200,300", help="comma-separated N values")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds all calls are up")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--caller-cpu", type=int, default=1)
    parser.add_argument(
        "--caller",
        choices=("fleet", "full"),
        default="fleet",
        help="fleet: lean caller (one shared tick, pre-encoded frames); "
        "full: the phone-faithful load caller (costs more per frame)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of server and caller (negative needs root): on a "
        "shared host, keeps unrelated jobs from preempting the measured processes",
    )
    parser.add_argument(
        "--caller-phases",
        type=int,
        default=10,
        help="fleet caller: send grids spread over the 20 ms period (1: every call's "
        "frame in one burst per tick, a pattern independent streams do not produce)",
    )
    parser.add_argument(
        "--realtime",
        type=int,
        default=0,
        metavar="PRIO",
        help="run server (chrt -f) and caller as SCHED_FIFO at PRIO (needs root): "
        "measures the server rather than the host's other jobs",
    )
    args = parser.parse_args(argv)
    calls = [int(n) for n in args.calls.split(",") if n]
    run = bench(
        calls,
        args.hold,
        args.server_cpu,
        args.caller_cpu,
        args.caller,
        args.nice,
        args.caller_phases,
        args.realtime,
    )
    try:
        import uvloop

        steps = uvloop.run(run)
    except ImportError:  # pragma: no cover
        steps = asyncio.run(run)
    print(render(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
