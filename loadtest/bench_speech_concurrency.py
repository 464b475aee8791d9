"""Concurrency sweep on real models: ``python -m loadtest.bench_speech_concurrency``.

For each N in ``--levels`` (default 1,5,10,15,20,25,30), N simultaneous calls of
the demo receptionist each wait for the greeting and ask one question; the run
reports p95 turn latency (caller side: end of speech -> first agent audio
received), playback gaps (underruns), the host's CPU and each worker's RSS
(sampled every 0.5 s). ``--no-cache`` serves every reply with live TTS instead
of the publish-time prompt cache. Each level is bounded by the caller's
deadline; the server runs in this process (see ``bench_turn_latency``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec
import psutil

from loadtest.bench_turn_latency import pct, run_calls, serve
from voxgate.server.worker_agent import SPEECH


async def sweep(levels: Sequence[int], *, cache: bool, workers: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    per_worker = max(1, -(-max(levels) // workers))
    async with serve(cache=cache, workers=workers, calls_per_worker=per_worker) as bench:
        supervisor = bench.app[SPEECH].supervisor
        for n in levels:
            cpu: list[float] = []
            rss: list[float] = []
            stop = asyncio.Event()

            async def sample(
                stop: asyncio.Event = stop, cpu: list[float] = cpu, rss: list[float] = rss
            ) -> None:
                psutil.cpu_percent(None)
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                    cpu.append(psutil.cpu_percent(None))
                    rss.extend(w.rss_mb for w in await supervisor.status_workers() if w.calls)

            sampler = asyncio.create_task(sample())
            summary = await run_calls(
                bench.caller(
                    audio=("opening_hours_saturday",),
                    calls=n,
                    concurrency=n,
                    wait_for_greeting=True,
                    gap_max_s=1.2,
                    silence_after_s=6.0,
                    greeting_timeout_s=30.0,
                    ramp_s=min(2.0, 0.1 * n),
                )
            )
            stop.set()
            await sampler
            lat = summary.turn_latency_received_ms
            rows.append(
                {
                    "calls": n,
                    "cache": cache,
                    "answered": f"{summary.turns_answered}/{summary.turns}",
                    "p50_ms": lat.p50,
                    "p95_ms": lat.p95,
                    "gaps": summary.gaps,
                    "outcomes": summary.outcomes,
                    "host_cpu_percent_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
                    "worker_rss_mb_max": max(rss) if rss else None,
                    "workers": len(await supervisor.status_workers()),
                    "first_agent_audio_p95_ms": summary.first_agent_audio_ms.p95,
                }
            )
            print(msgspec.json.encode(rows[-1]).decode(), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_speech_concurrency")
    parser.add_argument("--levels", default="1,5,10,15,20,25,30")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    asyncio.run(sweep(levels, cache=not args.no_cache, workers=args.workers))
    return 0


__all__ = ["pct", "sweep"]

if __name__ == "__main__":
    raise SystemExit(main())
