"""Browser-call (WebRTC) benchmarks against a real ``voxgate serve``.

``turns``: turn latency of one call on real models. The caller (an aiortc
peer, like the console) asks demo-receptionist for Saturday's opening hours,
listens to the answer, and asks again, ``--turns`` times. Per turn: end of
the caller's speech (the last frame of speech handed to its RTP sender) to
the first audible agent frame its receiver got, after aiortc's receive
jitter buffer, as a browser would hear it; plus the server's own turn
breakdown from the call record.

``echo``: N concurrent calls on the ``echo`` agent, with the server pinned
to one core and the callers (``--procs`` processes) to another. For each N,
at the receivers: every RTP packet's arrival time against its RTP timestamp
(transit-time variation between consecutive packets, RFC 3550 style, p50/p99
in ms) and the spacing of decoded frames; the server's CPU, its pacing
lateness (from ``/metrics``) and the callers' own lateness (a caller that
could not keep real time is reported, not blamed on the server). A call
that got no answer or never connected counts as a miss.

    python -m loadtest.bench_webrtc turns [--turns 8]
    python -m loadtest.bench_webrtc echo [--calls 10,50,100,150] [--hold 15] [--codec opus]

Bounded everywhere: ports from 0, loopback only, per-call and per-step deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import psutil

from loadtest.audio import FixtureLibrary, default_audio_dir
from loadtest.bench_twilio_echo import (
    bucket_quantile,
    parse_metrics,
    pin_redis,
    runqueue_wait,
    stop_server,
)
from loadtest.webrtc_caller import BrowserCaller, OfferRefused

ADMIN = "bench-admin-token-0123456789abcdef"
AUDIO = FixtureLibrary(default_audio_dir())


# -- the server --------------------------------------------------------------------


@dataclass
class Server:
    http: str
    proc: asyncio.subprocess.Process
    ps: psutil.Process


@contextlib.asynccontextmanager
async def serve(
    cpu: int | None, *, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    """``voxgate serve`` on loopback (port 0), pinned to ``cpu`` if given."""
    data_dir = Path(tempfile.mkdtemp(prefix="vg-bench-webrtc-"))
    ready = data_dir / "ready.json"
    env = {
        **os.environ,
        "VOXGATE_ADMIN_TOKEN": ADMIN,
        "VOXGATE_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    pin = ("taskset", "-c", str(cpu)) if cpu is not None else ()
    proc = await asyncio.create_subprocess_exec(
        *pin, sys.executable, "-c", "from voxgate.server.cli import main; raise SystemExit(main())",
        "serve", "--http-port", "0", "--sip-port", "0", "--data-dir", str(data_dir / "data"),
        "--ready-file", str(ready), "--drain-timeout", "5",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(90):
            while not ready.exists():
                if proc.returncode is not None:
                    raise RuntimeError("the server exited during start-up")
                await asyncio.sleep(0.1)
        http = json.loads(ready.read_text())["http"]
        yield Server(http, proc, psutil.Process(proc.pid))
    finally:
        await stop_server(proc, data_dir)


@dataclass
class Line:
    http: str
    tenant_id: str
    agent_id: str
    key: str


async def provision(session: aiohttp.ClientSession, http: str, template: str) -> Line:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "bench", "quotas": {"max_concurrent_calls": 2000, "max_cps": 1000}}
    async with session.post(f"{http}/system/tenants", json=body, headers=admin) as r:
        created = await r.json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    base = f"{http}/tenants/{created['id']}/api"
    async with session.post(
        f"{base}/agents", json={"name": template, "template": template}, headers=headers
    ) as r:
        agent = await r.json()
    return Line(http, created["id"], agent["id"], created["api_key"])


def _caller(
    session: aiohttp.ClientSession, line: Line, codecs: Sequence[str], *, prompt: bool = False
) -> BrowserCaller:
    return BrowserCaller(
        session, line.http, line.tenant_id, line.agent_id, line.key,
        codecs=codecs, prompt_receive=prompt,
    )  # fmt: skip


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100))


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# -- (a) turn latency -------------------------------------------------------------------


class TurnReport(msgspec.Struct, kw_only=True):
    turns: int
    answered: int
    reply_ms: list[float]
    reply_p50_ms: float | None
    reply_p95_ms: float | None
    server_end_to_end_ms: list[float]
    connect_ms: float | None
    greeting_ms: float | None  # answer applied -> first greeting audio


async def bench_turns(turns: int, codecs: Sequence[str], prompt: bool) -> TurnReport:
    question = AUDIO.load("opening_hours_saturday")
    utterance = question.utterances[0]
    trailing = question.duration_s - utterance.end_s
    replies: list[float] = []
    async with serve(None) as server, aiohttp.ClientSession() as session:
        line = await provision(session, server.http, "demo-receptionist")
        # Warm-up: the worker's first call binds it to the tenant and renders prompts.
        warm = _caller(session, line, codecs)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(120):
                await warm.call(http_s=60)
                await warm.wait_connected(20)
                await warm.wait_quiet(1.0, within=40)
        await warm.close()
        await asyncio.sleep(1.0)
        caller = _caller(session, line, codecs, prompt=prompt)
        try:
            asked_at = time.monotonic()
            call_id = await caller.call(http_s=60)
            await caller.wait_connected(20)
            connect_ms = (time.monotonic() - asked_at) * 1000
            first = await caller.wait_sound(asked_at, within=30)
            greeting_ms = None if first is None else (first - asked_at) * 1000
            await caller.wait_quiet(1.0, within=30)
            for _ in range(turns):
                sent = await asyncio.wait_for(caller.mic.play(question.payload), 15)
                speech_end = sent - trailing
                reply = await caller.wait_sound(speech_end, within=10)
                if reply is not None:
                    replies.append((reply - speech_end) * 1000)
                await caller.wait_quiet(1.2, within=30)
            await caller.hangup()
        finally:
            await caller.close()
        await asyncio.sleep(1.0)
        e2e = await _server_turns(session, line, call_id)
    return TurnReport(
        turns=turns,
        answered=len(replies),
        reply_ms=[round(v, 1) for v in replies],
        reply_p50_ms=_round(_pct(replies, 0.5)),
        reply_p95_ms=_round(_pct(replies, 0.95)),
        server_end_to_end_ms=e2e,
        connect_ms=_round(connect_ms),
        greeting_ms=_round(greeting_ms),
    )


async def _server_turns(session: aiohttp.ClientSession, line: Line, call_id: str) -> list[float]:
    headers = {"Authorization": f"Bearer {line.key}"}
    url = f"{line.http}/tenants/{line.tenant_id}/api/calls/{call_id}"
    async with session.get(url, headers=headers) as r:
        detail = await r.json()
    found: list[float] = []
    for event in detail.get("events", []):
        if event["kind"] == "turn":
            latencies = json.loads(event["detail"]).get("latencies", {})
            if "end_to_end" in latencies:
                found.append(round(float(latencies["end_to_end"]) * 1000, 1))
    return found


# -- (b) echo calls -----------------------------------------------------------------------


class CallerJob(msgspec.Struct, kw_only=True):
    line: dict[str, str]
    calls: int
    ramp_s: float
    hold_s: float
    codecs: list[str]
    cpu: int | None


class CallerResult(msgspec.Struct, kw_only=True):
    answered: int
    connected: int
    refused: dict[str, int]
    transit_hist: list[int]  # |transit delta| in 0.1 ms bins, last bin = overflow
    gap_hist: list[int]  # |frame spacing - 20 ms| at the decoded track, same bins
    late_frames: int  # microphone frames this process sent late (its own overload)
    cpu_s: float
    window_s: float


_BINS = 2000  # 0.1 ms bins up to 200 ms


def _hist(values: Sequence[float]) -> list[int]:
    bins = np.minimum((np.asarray(values, dtype=np.float64) * 10).astype(np.int64), _BINS)
    return np.bincount(bins, minlength=_BINS + 1).tolist()  # type: ignore[no-any-return]


def _hist_pct(hist: Sequence[int], q: float) -> float | None:
    counts = np.asarray(hist, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return None
    index = int(np.searchsorted(np.cumsum(counts), q * total))
    return index / 10


class _Arrivals:
    """Every RTP packet a receiver got: arrival (monotonic s) and RTP timestamp."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.stamps: list[int] = []
        self.clock = 48000

    def hook(self, caller: BrowserCaller, *, decode: bool) -> None:
        """Record every packet's arrival; with ``decode`` False, record only (the
        caller's CPU then goes to measuring, not to decoding the echo)."""
        pc = caller.pc
        assert pc is not None
        receiver = pc.getTransceivers()[0].receiver
        if not decode and self._hook_socket(receiver):
            return
        original = receiver._handle_rtp_packet

        async def arrived(packet: Any, arrival_time_ms: int) -> None:
            self.times.append(time.monotonic())
            self.stamps.append(packet.timestamp)
            if decode:
                await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = arrived  # type: ignore[method-assign]

    def _hook_socket(self, receiver: Any) -> bool:
        """Record RTP arrivals in the ICE socket's callback: the RTP header is clear
        in SRTP, so neither aiortc's per-packet DTLS task nor decryption is needed to
        read the timestamp, and the arrival time is taken before the caller's own
        queueing. The packets are not passed on (nothing listens to them); DTLS and
        RTCP are."""
        connection = getattr(receiver.transport.transport, "_connection", None)
        onward = getattr(connection, "data_received", None)
        if connection is None or not callable(onward):
            return False
        times, stamps, monotonic = self.times, self.stamps, time.monotonic

        def datagram(data: bytes, component: int) -> None:
            if len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                times.append(monotonic())
                stamps.append(int.from_bytes(data[4:8], "big"))
                return
            onward(data, component)

        connection.data_received = datagram
        return True

    def transit_deltas_ms(self, since: float, until: float) -> list[float]:
        """|(arrival_j - arrival_i) - (ts_j - ts_i) / clock| for consecutive packets."""
        out: list[float] = []
        pairs = zip(self.times, self.stamps, strict=True)
        previous: tuple[float, int] | None = None
        for at, stamp in pairs:
            if since <= at <= until:
                if previous is not None:
                    spent = at - previous[0]
                    media = ((stamp - previous[1]) % (1 << 32)) / self.clock
                    out.append(abs(spent - media) * 1000)
                previous = (at, stamp)
        return out


async def _one_echo_call(
    session: aiohttp.ClientSession,
    line: Line,
    codecs: Sequence[str],
    delay: float,
    until: float,
    speech: bytes,
    results: dict[str, Any],
) -> None:
    await asyncio.sleep(delay)
    caller = _caller(session, line, codecs)
    arrivals = _Arrivals()
    try:
        try:
            await caller.call(http_s=20)
        except OfferRefused as exc:
            results["refused"][exc.code or str(exc.status)] = (
                results["refused"].get(exc.code or str(exc.status), 0) + 1
            )
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            results["refused"][type(exc).__name__] = (
                results["refused"].get(type(exc).__name__, 0) + 1
            )
            return
        results["answered"] += 1
        opus = caller.codecs[0].lower() == "opus"
        arrivals.clock = 48000 if opus else 8000
        arrivals.hook(caller, decode=opus)
        try:
            await caller.wait_connected(15)
        except TimeoutError:
            results["refused"]["not_connected"] = results["refused"].get("not_connected", 0) + 1
            return
        results["connected"] += 1
        # The caller talks all the time: the echo agent has something to send back.
        while time.monotonic() < until - 0.5 and not caller.closed:
            done = caller.mic.play(speech)
            await asyncio.wait_for(done, until - time.monotonic() + 5)
    finally:
        results["late_frames"] += caller.mic.late_frames
        results["calls"].append((caller, arrivals))
        await caller.close()


async def run_caller_job(job: CallerJob) -> CallerResult:
    if job.cpu is not None:
        os.sched_setaffinity(0, {job.cpu})
    line = Line(**job.line)
    speech = AUDIO.load("book_appointment").payload
    start = time.monotonic()
    window = (start + job.ramp_s + 3.0, start + job.ramp_s + 3.0 + job.hold_s)
    until = window[1] + 0.5
    results: dict[str, Any] = {
        "answered": 0, "connected": 0, "refused": {}, "late_frames": 0, "calls": [],
    }  # fmt: skip
    me = psutil.Process()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [
            asyncio.ensure_future(
                _one_echo_call(
                    session, line, job.codecs, i * job.ramp_s / max(1, job.calls), until,
                    speech, results,
                )
            )
            for i in range(job.calls)
        ]  # fmt: skip
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        cpu0 = sum(me.cpu_times()[:2])
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        cpu1 = sum(me.cpu_times()[:2])
        async with asyncio.timeout(job.ramp_s + job.hold_s + 60):
            await asyncio.gather(*tasks, return_exceptions=True)
    transit: list[float] = []
    gaps: list[float] = []
    for caller, arrivals in results["calls"]:
        transit += arrivals.transit_deltas_ms(*window)
        times = [t for t in caller.ear.arrivals if window[0] <= t <= window[1]]
        # Decoded frames come one per packet (20 ms) for PCMU; Opus frames too.
        gaps += [abs((b - a) * 1000 - 20.0) for a, b in itertools.pairwise(times)]
    return CallerResult(
        answered=results["answered"],
        connected=results["connected"],
        refused=results["refused"],
        transit_hist=_hist(transit),
        gap_hist=_hist(gaps),
        late_frames=results["late_frames"],
        cpu_s=cpu1 - cpu0,
        window_s=window[1] - window[0],
    )


class EchoStep(msgspec.Struct, kw_only=True):
    calls: int
    codec: str
    answered: int
    connected: int
    misses: int
    refused: dict[str, int]
    transit_p50_ms: float | None
    transit_p99_ms: float | None
    transit_max_ms: float | None
    frame_gap_p99_ms: float | None
    server_lateness_p99_ms: float | None
    server_cpu_percent: float
    server_runq_wait_ms_per_s: float | None
    callers_cpu_percent: float
    callers_late_frames: int
    load_average: float


async def _run_callers(job: CallerJob, procs: int) -> list[CallerResult]:
    shares = [job.calls // procs + (1 if i < job.calls % procs else 0) for i in range(procs)]
    children = []
    for share in shares:
        if share == 0:
            continue
        part = msgspec.structs.replace(job, calls=share)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.bench_webrtc", "_callers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None
        child.stdin.write(msgspec.json.encode(part))
        child.stdin.close()
        children.append(child)
    results: list[CallerResult] = []
    for child in children:
        assert child.stdout is not None
        async with asyncio.timeout(job.ramp_s + job.hold_s + 120):
            out = await child.stdout.read()
            await child.wait()
        lines = [x for x in out.decode().splitlines() if x.startswith("{")]
        if lines:
            results.append(msgspec.json.decode(lines[-1], type=CallerResult))
    return results


async def bench_echo(
    calls: Sequence[int], hold: float, codec: str, server_cpu: int, caller_cpu: int, procs: int
) -> list[EchoStep]:
    steps: list[EchoStep] = []
    codecs = [codec] if codec != "browser" else ["opus", "pcmu", "pcma"]
    # This process too belongs on the callers' core (as in bench_twilio_echo): left
    # unpinned, the scheduler put it on the server's core, whose run-queue wait it
    # then added to.
    os.sched_setaffinity(0, {caller_cpu})
    async with serve(server_cpu) as server, aiohttp.ClientSession() as session:
        pin_redis(server.ps, caller_cpu)
        line = await provision(session, server.http, "echo")
        for n in calls:
            ramp = min(10.0, max(2.0, n / 20))
            job = CallerJob(
                line={"http": line.http, "tenant_id": line.tenant_id,
                      "agent_id": line.agent_id, "key": line.key},
                calls=n, ramp_s=ramp, hold_s=hold, codecs=codecs, cpu=caller_cpu,
            )  # fmt: skip
            callers = asyncio.ensure_future(_run_callers(job, procs))
            await asyncio.sleep(ramp + 3.0)
            before = await _scrape(session, server.http)
            wait0 = runqueue_wait(server.ps.pid)
            cpu0, t0 = sum(server.ps.cpu_times()[:2]), time.monotonic()
            await asyncio.sleep(hold)
            cpu1, t1 = sum(server.ps.cpu_times()[:2]), time.monotonic()
            wait1 = runqueue_wait(server.ps.pid)
            after = await _scrape(session, server.http)
            load = os.getloadavg()[0]
            results = await callers
            transit = np.sum([r.transit_hist for r in results], axis=0).tolist() if results else []
            gaps = np.sum([r.gap_hist for r in results], axis=0).tolist() if results else []
            refused: dict[str, int] = {}
            for r in results:
                for k, v in r.refused.items():
                    refused[k] = refused.get(k, 0) + v
            connected = sum(r.connected for r in results)
            window = max((r.window_s for r in results), default=hold)
            step = EchoStep(
                calls=n,
                codec=codec,
                answered=sum(r.answered for r in results),
                connected=connected,
                misses=n - connected,
                refused=refused,
                transit_p50_ms=_hist_pct(transit, 0.5),
                transit_p99_ms=_hist_pct(transit, 0.99),
                transit_max_ms=_hist_pct(transit, 1.0),
                frame_gap_p99_ms=_hist_pct(gaps, 0.99),
                server_lateness_p99_ms=_round(_ms(bucket_quantile(before, after, 0.99)), 2),
                server_cpu_percent=round((cpu1 - cpu0) / (t1 - t0) * 100, 1),
                server_runq_wait_ms_per_s=(
                    None if wait0 is None or wait1 is None
                    else round((wait1 - wait0) / (t1 - t0) * 1000, 1)
                ),
                callers_cpu_percent=round(sum(r.cpu_s for r in results) / window * 100, 1),
                callers_late_frames=sum(r.late_frames for r in results),
                load_average=round(load, 2),
            )  # fmt: skip
            steps.append(step)
            print(json.dumps(msgspec.to_builtins(step)), flush=True)
            await asyncio.sleep(3.0)  # calls of this step wind down
    return steps


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


async def _scrape(session: aiohttp.ClientSession, http: str) -> dict[str, float]:
    async with session.get(f"{http}/metrics") as r:
        return parse_metrics(await r.text())


def render_echo(steps: Sequence[EchoStep]) -> str:
    head = (
        "| calls | codec | connected | transit p50/p99/max ms | frame gap p99 ms | "
        "server pacing p99 ms | server CPU % | callers CPU % | caller late frames |\n"
        "|---:|---|---:|---|---:|---:|---:|---:|---:|\n"
    )
    rows = "".join(
        f"| {s.calls} | {s.codec} | {s.connected} | {s.transit_p50_ms}/{s.transit_p99_ms}/"
        f"{s.transit_max_ms} | {s.frame_gap_p99_ms} | {s.server_lateness_p99_ms} | "
        f"{s.server_cpu_percent} | {s.callers_cpu_percent} | {s.callers_late_frames} |\n"
        for s in steps
    )
    return head + rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_webrtc")
    sub = parser.add_subparsers(dest="command", required=True)
    turns = sub.add_parser("turns", help="turn latency of one call on real models")
    turns.add_argument("--turns", type=int, default=8)
    turns.add_argument("--codec", default="browser", help="opus, pcmu, or browser (all)")
    turns.add_argument(
        "--client-buffer", action="store_true",
        help="keep aiortc's fixed 80 ms receive prefetch in the caller (default: measure "
        "at the packets; a browser sizes its own buffer)",
    )  # fmt: skip
    echo = sub.add_parser("echo", help="N concurrent echo calls, server on one core")
    echo.add_argument("--calls", default="10,50,100,150")
    echo.add_argument("--hold", type=float, default=15.0)
    echo.add_argument("--codec", default="opus", help="opus, pcmu, or browser")
    echo.add_argument("--server-cpu", type=int, default=0)
    echo.add_argument("--caller-cpu", type=int, default=1)
    echo.add_argument("--procs", type=int, default=2, help="caller processes")
    sub.add_parser("_callers", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "_callers":
        job = msgspec.json.decode(sys.stdin.buffer.read(), type=CallerJob)
        result = asyncio.run(run_caller_job(job))
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
        return 0
    if args.command == "turns":
        codecs = ["opus", "pcmu", "pcma"] if args.codec == "browser" else [args.codec]
        report = asyncio.run(bench_turns(args.turns, codecs, not args.client_buffer))
        print(json.dumps(msgspec.to_builtins(report), indent=1))
        if report.server_end_to_end_ms:
            print(f"server end-to-end median {statistics.median(report.server_end_to_end_ms)} ms")
        return 0
    calls = [int(x) for x in args.calls.split(",") if x]
    steps = asyncio.run(
        bench_echo(calls, args.hold, args.codec, args.server_cpu, args.caller_cpu, args.procs)
    )
    print(render_echo(steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
