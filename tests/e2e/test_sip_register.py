"""Our REGISTER client against sipp as a digest-challenging registrar (loopback)."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.server.config import Config
from voxgate.server.registrations import RegistrationDriver, UaRegisterSender
from voxgate.server.services import Services
from voxgate.sip.registration import RegistrationConfig
from voxgate.sip.transaction import TimerConfig
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import IncomingInvite, UserAgent
from voxgate.tenants.models import TenantCreate
from voxgate.tenants.trunks import TrunkCreate, TrunkStore

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Reject:
    async def handle_invite(self, invite: IncomingInvite) -> None:
        invite.reject(603)


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    opened = await Services.open(Config(data_dir=tmp_path / "data"))
    try:
        yield opened
    finally:
        await opened.close()


async def test_register_with_digest_and_refresh(services: Services) -> None:
    sipp_port = _free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SCENARIOS / "uas_register_digest.xml"), "-i", "127.0.0.1",
        "-p", str(sipp_port), "-m", "1", "-timeout", "20", "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    transports = SipTransports()
    await transports.listen_udp("127.0.0.1", 0)
    ua = UserAgent(transports, _Reject(), advertised_host="127.0.0.1", timers=TimerConfig(t1=0.1))
    tenant = await services.registry.create(TenantCreate(name="A"), "admin")
    trunks = TrunkStore(services.store, services.secrets)
    trunk = await trunks.create(
        tenant.id,
        TrunkCreate(
            name="sipp", hosts=[f"127.0.0.1:{sipp_port}"], username="100000_agent",
            password="zz-sipp-pw", register_expires=60,
        ),
    )  # fmt: skip

    def tune(config: RegistrationConfig) -> RegistrationConfig:
        # sipp may still be binding its socket: retry quickly instead of the 2 s default.
        return RegistrationConfig(
            hosts=config.hosts, username=config.username, password=config.password,
            transport=config.transport, expires=config.expires,
            contact_user=config.contact_user, backoff_initial=0.2, backoff_max=0.5,
        )  # fmt: skip

    driver = RegistrationDriver(trunks, UaRegisterSender(ua), tune=tune)
    try:
        await driver.sync()

        def registrations() -> int:
            status = driver.status(tenant.id, trunk.id)
            return 0 if status is None else status.registrations

        async with asyncio.timeout(15):
            async with driver.changed:
                await driver.changed.wait_for(lambda: registrations() >= 1)
            first = driver.status(tenant.id, trunk.id)
            assert first is not None and first.state == "registered"
            assert first.expires_in is not None and first.expires_in <= 2.0
            # The refresh comes at ~80 % of the 2 s sipp granted.
            async with driver.changed:
                await driver.changed.wait_for(lambda: registrations() >= 2)
        status = driver.status(tenant.id, trunk.id)
        assert status is not None and status.state == "registered"
        assert status.expires_in is not None and status.expires_in > 30
        assert status.last_error is None
        code = await asyncio.wait_for(proc.wait(), 15)
        output = (await proc.stdout.read()).decode(errors="replace") if proc.stdout else ""
        assert code == 0, output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await driver.close()
        await ua.close()
        await transports.close()
