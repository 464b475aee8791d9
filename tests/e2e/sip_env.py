"""A real voxgate server with SIP listening on loopback, for SIP tests with real peers.

Embedded Redis under ``tmp_path``, HTTP/SIP on port 0, RTP on a random high
range, one tenant with an ``echo`` and a ``prompt`` agent mapped to SIP numbers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from voxgate.server.config import Config
from voxgate.server.runtime import Server
from voxgate.server.services import Services
from voxgate.server.sip_gateway import SipListener
from voxgate.server.telephony import sip_listener_hook
from voxgate.sip.transaction import Transport
from voxgate.tenants.models import NumberCreate, Quotas, TenantCreate

TESTDATA = Path(__file__).resolve().parents[2] / "tests" / "data"
SCENARIOS = TESTDATA / "sip" / "scenarios"
ECHO_NUMBER = "+15551230001"
PROMPT_NUMBER = "+15551230002"


@dataclass
class SipEnv:
    server: Server
    sip: SipListener
    tenant_id: str
    echo_agent: str
    prompt_agent: str

    @property
    def services(self) -> Services:
        return self.server.services

    @property
    def sip_port(self) -> int:
        address = self.sip.transports.local_address(Transport.UDP)
        assert address is not None
        return address[1]


def _rtp_range() -> tuple[int, int]:
    base = random.randrange(30000, 58000, 2)
    return base, base + 799


@contextlib.asynccontextmanager
async def sip_server(
    tmp_path: Path, *, ring_seconds: float = 0.0, quotas: Quotas | None = None
) -> AsyncIterator[SipEnv]:
    config = Config(
        data_dir=tmp_path / "data",
        http_port=0,
        sip_port=0,
        rtp_ports=_rtp_range(),
        drain_timeout=2.0,
    )
    server = Server(config)
    starter = sip_listener_hook(server, ring_seconds=ring_seconds)
    server.listener_hooks.append(starter)
    await server.start()
    try:
        services = server.services
        created = await services.registry.create(
            TenantCreate(
                name="sip-tests", quotas=quotas or Quotas(max_concurrent_calls=500, max_cps=500)
            ),
            "test",
        )
        echo = await services.agents.create(created.id, "echo", "echo", "echo", None, [])
        prompt = await services.agents.create(created.id, "prompt", "prompt", "prompt", None, [])
        await services.numbers.create(
            created.id, NumberCreate(number=ECHO_NUMBER, provider="sip", agent_id=echo.id)
        )
        await services.numbers.create(
            created.id, NumberCreate(number=PROMPT_NUMBER, provider="sip", agent_id=prompt.id)
        )
        assert starter.listener is not None
        yield SipEnv(server, starter.listener.sip, created.id, echo.id, prompt.id)
    finally:
        await server.stop()
