"""Outbound orchestrator: policy first, admission, Twilio REST (local FAKE), trunk dialer."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.server.fake_twilio import FakeTwilio, fake_twilio
from voxgate.server.call_control import CallControl
from voxgate.server.config import Config
from voxgate.server.outbound import (
    CallRefused,
    DialRefused,
    Orchestrator,
    ProviderError,
    TransferFailed,
    TrunkDial,
)
from voxgate.server.routes_twilio import StreamGrant, _token_key
from voxgate.server.services import Services
from voxgate.server.twilio_rest import TwilioRest
from voxgate.tenants.calls import CallRecords
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.models import Quotas, TenantCreate
from voxgate.tenants.trunks import TrunkCreate, TrunkStore


class FakeDialer:
    """Stands in for the SIP gateway: records dials, can fail, can hold calls up."""

    def __init__(self) -> None:
        self.dials: list[TrunkDial] = []
        self.transfers: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        self.done = asyncio.Event()

    async def dial(self, request: TrunkDial) -> None:
        self.dials.append(request)
        try:
            if self.fail is not None:
                raise self.fail
        finally:
            self.done.set()

    async def blind_transfer(self, call_id: str, target: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.transfers.append((call_id, target))


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    opened = await Services.open(Config(data_dir=tmp_path / "data"))
    try:
        yield opened
    finally:
        await opened.close()


async def tenant_with_agent(services: Services, quotas: Quotas | None = None) -> tuple[str, str]:
    created = await services.registry.create(TenantCreate(name="A", quotas=quotas), "admin")
    agent = await services.agents.create(created.id, "Echo", "echo", "echo", None, [])
    return created.id, agent.id


def orchestrator(
    services: Services, fake: FakeTwilio | None = None, dialer: FakeDialer | None = None
) -> tuple[Orchestrator, CallControl, CallRecords]:
    control = CallControl()
    records = CallRecords(services.store)
    twilio = TwilioRest.open(api_base=fake.base_url) if fake is not None else None
    return (
        Orchestrator(
            services, control, records, twilio=twilio, dialer=dialer,
            public_url="https://voice.example.com",
        ),
        control,
        records,
    )  # fmt: skip


async def test_policy_is_checked_first_and_audited(services: Services) -> None:
    tenant_id, agent_id = await tenant_with_agent(services)
    orch, control, _ = orchestrator(services)
    with pytest.raises(DialRefused) as info:
        await orch.make_call(tenant_id, "+19005550100", agent_id, "twilio", actor="apikey")
    assert info.value.reason == "premium_rate"
    with pytest.raises(DialRefused):
        await orch.make_call(tenant_id, "+442071838750", agent_id, "trunk:trk_x")
    entries = await services.audit.list(tenant_id)
    assert [e.action for e in entries[:2]] == ["dial.refused", "dial.refused"]
    assert len(control) == 0
    with pytest.raises(InvalidInput):
        await orch.make_call(tenant_id, "+14155550100", agent_id, "carrier-pigeon")
    with pytest.raises(InvalidInput):
        await orch.make_call(tenant_id, "+14155550100", agent_id, "trunk:trk_missing")
    with pytest.raises(InvalidInput):
        await orch.make_call(tenant_id, "+14155550100", "ag_missing", "twilio")
    with pytest.raises(ProviderError):  # no Twilio client configured
        await orch.make_call(tenant_id, "+14155550100", agent_id, "twilio")


async def test_twilio_call_and_transfer(services: Services) -> None:
    tenant_id, agent_id = await tenant_with_agent(services)
    async with fake_twilio() as fake:
        orch, control, records = orchestrator(services, fake)
        assert orch.twilio is not None
        try:
            with pytest.raises(ProviderError):  # no twilio secret yet
                await orch.make_call(tenant_id, "+14155550100", agent_id, "twilio")
            await services.secrets.put(
                tenant_id,
                "twilio",
                {"account_sid": fake.account_sid, "auth_token": fake.auth_token,
                 "from_number": "+15145550100"},
            )  # fmt: skip
            call = await orch.make_call(tenant_id, "14155550100", agent_id, "twilio")
            assert call.id.startswith("CA") and call.provider == "twilio"
            assert call.to == "+14155550100" and call.from_ == "+15145550100"
            sent = fake.requests[-1].form
            assert sent["To"] == "+14155550100" and sent["From"] == "+15145550100"
            assert 'url="wss://voice.example.com/twilio/media"' in sent["Twiml"]
            assert sent["StatusCallback"] == "https://voice.example.com/twilio/status"
            # The TwiML's token redeems to a grant for this call, like the webhook's.
            match = re.search(r'name="token" value="([^"]+)"', sent["Twiml"])
            assert match is not None
            raw = await services.store.redis.get(_token_key(match.group(1)))
            assert raw is not None
            grant = msgspec.json.decode(raw, type=StreamGrant)
            assert grant.call_id == call.id and grant.agent_id == agent_id
            live = control.get(call.id)
            assert live is not None and live.provider == "twilio" and len(control) == 1
            record = await records.get(tenant_id, call.id)
            assert record.provider == "twilio" and record.status == "ringing"
            assert record.direction == "outbound"
            detail = await records.detail(tenant_id, call.id)
            assert detail.events[0].kind == "outbound"

            dialled = await orch.transfer(tenant_id, call.id, "+14155550111")
            assert dialled == "+14155550111"
            assert "<Number>+14155550111</Number>" in fake.requests[-1].form["Twiml"]
            with pytest.raises(DialRefused):
                await orch.transfer(tenant_id, call.id, "+18095550100")
            with pytest.raises(TransferFailed):  # Twilio: call not in progress
                await orch.transfer(tenant_id, "CA" + "0" * 32, "+14155550111", provider="twilio")
            assert (await services.audit.list(tenant_id))[0].detail["purpose"] == "transfer"

            fake.fail_status = 500
            with pytest.raises(ProviderError):
                await orch.make_call(tenant_id, "+14155550100", agent_id, "twilio")
            assert len(control) == 1  # the failed attempt released its reservation
        finally:
            await orch.twilio.close()


async def test_trunk_call_dial_failure_and_sip_transfer(services: Services) -> None:
    tenant_id, agent_id = await tenant_with_agent(services)
    trunk = await TrunkStore(services.store, services.secrets).create(
        tenant_id,
        TrunkCreate(
            name="voip.ms", preset="voipms", username="100000_a", password="zz-pw",
            caller_id="+15145550100",
        ),
    )  # fmt: skip
    dialer = FakeDialer()
    orch, control, records = orchestrator(services, dialer=dialer)
    call = await orch.make_call(tenant_id, "+14155550100", agent_id, f"trunk:{trunk.id}")
    assert call.provider == "sip" and call.from_ == "+15145550100"
    await asyncio.wait_for(dialer.done.wait(), 5)
    request = dialer.dials[0]
    assert request.call_id == call.id and request.to == "+14155550100"
    assert request.credentials is not None and request.credentials.password == "zz-pw"
    assert request.trunk.id == trunk.id
    assert control.get(call.id) is not None
    await orch.transfer(tenant_id, call.id, "+14155550199", provider="sip")
    assert dialer.transfers == [(call.id, "+14155550199")]

    dialer.fail = RuntimeError("486 Busy Here")
    dialer.done.clear()
    failed = await orch.make_call(tenant_id, "+14155550100", agent_id, f"trunk:{trunk.id}")
    await asyncio.wait_for(dialer.done.wait(), 5)
    for _ in range(100):  # the failure is recorded right after dial() raised
        if (await records.get(tenant_id, failed.id)).status == "failed":
            break
        await asyncio.sleep(0)
    record = await records.get(tenant_id, failed.id)
    assert record.status == "failed" and record.end_reason == "486 Busy Here"
    assert record.direction == "outbound"
    assert control.get(failed.id) is None
    with pytest.raises(TransferFailed):
        await orch.transfer(tenant_id, call.id, "+14155550199", provider="sip")
    await orch.close()


async def test_admission_limits_outbound(services: Services) -> None:
    tenant_id, agent_id = await tenant_with_agent(services, Quotas(max_concurrent_calls=1))
    trunk = await TrunkStore(services.store, services.secrets).create(
        tenant_id, TrunkCreate(name="ip", hosts=["127.0.0.1:5099"], username="u", register=False)
    )
    dialer = FakeDialer()
    orch, _, _ = orchestrator(services, dialer=dialer)
    await orch.make_call(tenant_id, "+14155550100", agent_id, f"trunk:{trunk.id}")
    with pytest.raises(CallRefused):
        await orch.make_call(tenant_id, "+14155550100", agent_id, f"trunk:{trunk.id}")
    await services.registry.suspend(tenant_id, "admin")
    with pytest.raises(CallRefused):
        await orch.make_call(tenant_id, "+14155550100", agent_id, f"trunk:{trunk.id}")
    await orch.close()
