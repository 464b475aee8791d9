"""Turn latency of one call on real models: ``python -m loadtest.bench_turn_latency``.

Starts the voxgate app in this process on a loopback port (embedded Redis under
a temporary data dir; speech workers are real processes), creates a tenant with
the ``demo-receptionist`` agent on a Twilio number, and calls it with the load
caller, one call after another. Reports, per turn:

- caller side: end of the caller's speech -> first audible agent media received
  (``reply_received_ms``; loopback, so this is "first agent audio leaving the
  server" plus a WebSocket hop),
- server side: the worker's stage breakdown from the call record's turn
  entries (endpointing, STT, NLP, TTS first chunk, end-to-end to the first
  AudioOut).

Bounded: ``--calls`` calls, each at most its audio length + 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import ClientSession, web

from loadtest.twilio_caller import CallerConfig, run_call, run_calls
from voxgate.server.app import create_app
from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.runtime import bind_tcp
from voxgate.server.services import Services
from voxgate.server.supervisor import SupervisorConfig
from voxgate.server.worker_agent import (
    SPEECH,
    FlowAgentFactory,
    RecordSink,
    install_flow_agents,
)
from voxgate.tenants.store import to_bytes

ADMIN = "bench-admin-token-0123456789abcdef"
PUBLIC_URL = "https://voice.example.com"
AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "audio"


@dataclass
class Bench:
    url: str
    services: Services
    app: web.Application
    tenant_id: str
    number: str
    sid: str
    token: str

    def caller(self, **options: Any) -> CallerConfig:
        return CallerConfig(
            url=self.url,
            account_sid=self.sid,
            auth_token=self.token,
            public_url=PUBLIC_URL,
            to=self.number,
            audio_dir=str(AUDIO.resolve()),
            **options,
        )

    async def stage_latencies(self) -> list[dict[str, float]]:
        """Every turn's stage latencies from the call records' event logs."""
        redis = self.services.store.redis
        found: list[dict[str, float]] = []
        for key in await redis.keys(f"vg:{{{self.tenant_id}}}:call_events:*"):
            for raw in await redis.lrange(key, 0, -1):
                entry = json.loads(to_bytes(raw))
                if entry.get("kind") == "turn":
                    found.append(json.loads(entry["detail"])["latencies"])
        return found


@contextlib.asynccontextmanager
async def serve(
    *, cache: bool = True, workers: int = 2, calls_per_worker: int = 15, prewarm: int = 1
) -> AsyncIterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="voxgate-bench-") as tmp:
        config = Config(
            data_dir=Path(tmp),
            http_port=0,
            admin_token=ADMIN,
            public_url=PUBLIC_URL,
            drain_timeout=2.0,
        )
        services = await Services.open(config)
        runner: web.AppRunner | None = None
        try:
            await services.admin_tokens.ensure(ADMIN)
            app = create_app(config, services)
            install_flow_agents(
                app, config=SupervisorConfig(prewarm=prewarm, max_workers_total=workers + 1)
            )
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            sock = bind_tcp("127.0.0.1", 0, "HTTP")
            await web.SockSite(runner, sock).start()
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            bench = await _provision(url, services, app, workers, calls_per_worker)
            speech = app[SPEECH]
            if not cache:
                calls = app[CALLS]
                calls.agents.register(
                    "flow",
                    FlowAgentFactory(
                        speech.supervisor,
                        quotas=lambda tid: _quotas(services, tid),
                        sink=lambda tid: RecordSink(tid, calls.records, services.store.redis),
                    ),
                )
            speech.supervisor.activate()
            async with asyncio.timeout(180):
                await speech.supervisor.wait_prewarmed()
                await speech.prompts.idle.wait()
            yield bench
        finally:
            if runner is not None:
                await runner.cleanup()
            await services.close()


async def _quotas(services: Services, tenant_id: str) -> Any:
    return (await services.registry.get(tenant_id)).quotas


async def _provision(
    url: str, services: Services, app: web.Application, workers: int, per_worker: int
) -> Bench:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with ClientSession(url) as http:
        quotas = {
            "max_workers": workers,
            "calls_per_worker": per_worker,
            "max_concurrent_calls": 100,
            "max_cps": 50,
            "memory_mb": 2048,
            "cpu_percent": 400,
        }
        async with http.post(
            "/system/tenants", json={"name": "bench", "quotas": quotas}, headers=admin
        ) as r:
            tenant = await r.json()
        headers = {"Authorization": f"Bearer {tenant['api_key']}"}
        base = f"/tenants/{tenant['id']}/api"
        async with http.post(
            f"{base}/agents",
            json={"name": "desk", "template": "demo-receptionist"},
            headers=headers,
        ) as r:
            agent = await r.json()
        number = "+15550100777"
        async with http.post(
            f"{base}/numbers",
            json={"number": number, "provider": "twilio", "agent_id": agent["id"]},
            headers=headers,
        ) as r:
            assert r.status == 201, await r.text()
        sid, token = "AC" + "b2" * 16, "bench-twilio-token-0123456789"
        async with http.put(
            f"{base}/secrets/twilio",
            json={"account_sid": sid, "auth_token": token},
            headers=headers,
        ) as r:
            assert r.status == 204
    app[SPEECH].prompts.schedule(
        tenant["id"], (await services.agents.get(tenant["id"], agent["id"])).flow
    )
    return Bench(url, services, app, tenant["id"], number, sid, token)


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


CONVERSATION = ("opening_hours_saturday", "book_appointment", "goodbye")


async def turn_latency(calls: int) -> dict[str, Any]:
    async with serve() as bench:
        received: list[float] = []
        for index in range(calls):
            result = await run_call(
                bench.caller(
                    audio=CONVERSATION,
                    sequence=True,
                    gap_s=16.0,
                    gap_max_s=1.2,
                    wait_for_greeting=True,
                    silence_after_s=8.0,
                ),
                index=index,
            )
            received += [
                t.reply_received_ms for t in result.report.turns if t.reply_received_ms is not None
            ]
        stages = await bench.stage_latencies()
    breakdown = {
        name: {
            "p50_ms": round(1000 * (pct(vals, 0.5) or 0), 1),
            "p95_ms": round(1000 * (pct(vals, 0.95) or 0), 1),
        }
        for name in ("endpointing", "stt", "nlp", "tts_first_chunk", "end_to_end")
        if (vals := [s[name] for s in stages if name in s])
    }
    return {
        "calls": calls,
        "turns": len(received),
        "reply_received_ms": {
            "p50": pct(received, 0.5),
            "p95": pct(received, 0.95),
            "mean": round(statistics.fmean(received), 1) if received else None,
        },
        "server_stages": breakdown,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_turn_latency")
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args(argv)
    print(msgspec.json.format(msgspec.json.encode(asyncio.run(turn_latency(args.calls)))).decode())
    return 0


__all__ = ["Bench", "pct", "run_calls", "serve", "turn_latency"]

if __name__ == "__main__":
    raise SystemExit(main())
