"""Tenant secrets for llm/webhook nodes: read at call start only for flows that need them,
reduced to the fields side work uses, sent in StartCall, never logged or shown in a repr."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from voxgate.agents import ipc
from voxgate.media.call import Call, EndReason
from voxgate.media.channel import MediaChannel
from voxgate.server.supervisor import Supervisor, WorkerUnavailable
from voxgate.server.worker_agent import (
    FlowAgentFactory,
    FlowWorkerAgent,
    NullSink,
    read_call_secrets,
    side_work_secrets,
)
from voxgate.tenants.models import Agent, Quotas

API_KEY = "sk-live-7f3a9c1e5b"
SIGNING_KEY = "whsec-2b8d4e6f"
SECRETS: dict[str, dict[str, Any]] = {
    "llm": {"base_url": "https://llm.example/v1", "api_key": API_KEY, "model": "m", "org": 7},
    "webhook": {"secret": SIGNING_KEY, "note": "extra fields are not passed on"},
    "twilio": {"auth_token": "never-sent"},
}


def _flow(*types: str) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    nodes += [{"id": f"n{i}", "type": t} for i, t in enumerate(types)]
    return {"schema": "flowspec/1", "id": "f", "nodes": nodes, "edges": []}


class Vault:
    def __init__(self, fail: bool = False) -> None:
        self.reads: list[tuple[str, str]] = []
        self.fail = fail

    async def get(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        self.reads.append((tenant_id, name))
        if self.fail:
            raise ConnectionError("redis down")
        return SECRETS.get(name)


class CapturingSupervisor:
    """Takes the StartCall a call would send to its worker, then refuses the call."""

    def __init__(self) -> None:
        self.started: list[ipc.StartCall] = []

    async def start_call(self, start: ipc.StartCall, quotas: Quotas) -> None:
        self.started.append(start)
        raise WorkerUnavailable("test: no worker")


class HangupChannel:
    closed = False

    def __init__(self) -> None:
        self.reasons: list[EndReason] = []

    async def hangup(self, reason: EndReason) -> None:
        self.reasons.append(reason)
        self.closed = True


def test_side_work_secrets_only_for_llm_and_webhook_nodes() -> None:
    assert side_work_secrets(_flow("say", "intent", "knowledge")) == ()
    assert side_work_secrets(_flow("llm")) == ("llm",)
    assert side_work_secrets(_flow("webhook", "llm", "llm")) == ("llm", "webhook")
    nested = {**_flow("say"), "subflows": [{"id": "s", "nodes": [{"type": "webhook"}]}]}
    assert side_work_secrets(nested) == ("webhook",)
    # Malformed documents do not crash the scan (validation happens elsewhere).
    assert side_work_secrets({"nodes": ["x", 3, None, {"type": None}]}) == ()


async def test_read_call_secrets_keeps_only_known_string_fields() -> None:
    vault = Vault()
    secrets = await read_call_secrets(vault.get, "ta", ("llm", "webhook"))
    assert secrets.llm == {"base_url": "https://llm.example/v1", "api_key": API_KEY, "model": "m"}
    assert secrets.webhook == {"secret": SIGNING_KEY}
    assert vault.reads == [("ta", "llm"), ("ta", "webhook")]


async def test_unreadable_secret_is_left_out_and_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = await read_call_secrets(Vault(fail=True).get, "ta", ("llm",))
    assert secrets.llm is None and secrets.webhook is None
    assert "secret 'llm' not readable" in caplog.text


def _call(call_id: str) -> Call:
    call = Call(
        call_id=call_id, tenant_id="ta", agent_id="a1", provider="twilio",
        from_number="+1", to_number="+2", now=0.0,
    )  # fmt: skip
    call.answer(0.0)
    return call


def _agent(flow: dict[str, Any]) -> Agent:
    return Agent(
        id="a1", name="A", kind="flow", template=None, version=1, flow=flow,
        warnings=[], created_at=0.0, updated_at=0.0,
    )  # fmt: skip


async def _start_of(flow: dict[str, Any], vault: Vault) -> ipc.StartCall:
    supervisor = CapturingSupervisor()

    async def quotas(tenant_id: str) -> Quotas:
        return Quotas()

    factory = FlowAgentFactory(
        cast(Supervisor, supervisor),
        quotas=quotas,
        sink=lambda tenant_id: NullSink(),
        secrets=vault.get,
    )
    agent = factory(_agent(flow), _call("c1"))
    assert isinstance(agent, FlowWorkerAgent)
    channel = HangupChannel()
    await asyncio.wait_for(agent.run(cast(MediaChannel, channel)), 5)
    assert channel.reasons == [EndReason.WORKER_LOST]
    (start,) = supervisor.started
    return start


async def test_llm_flow_call_carries_the_tenants_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    vault = Vault()
    start = await _start_of(_flow("llm", "webhook"), vault)
    assert start.secrets.llm is not None and start.secrets.llm["api_key"] == API_KEY
    assert start.secrets.webhook == {"secret": SIGNING_KEY}
    assert ("ta", "twilio") not in vault.reads
    # The frame's repr (what a log line or a traceback would show) hides the values,
    # and nothing logged while starting the call contains them.
    for text in (repr(start), str(start), caplog.text):
        assert API_KEY not in text and SIGNING_KEY not in text
    assert "api_key" in repr(start)  # the names show, so a reader knows what was sent
    # The worker needs the values: they survive the wire.
    decoded = ipc.FrameDecoder().feed(ipc.FrameEncoder().encode(start))[0]
    assert isinstance(decoded, ipc.StartCall) and decoded.secrets == start.secrets


async def test_flow_without_side_work_reads_no_secret() -> None:
    vault = Vault()
    start = await _start_of(_flow("say"), vault)
    assert vault.reads == []
    assert start.secrets == ipc.CallSecrets()
