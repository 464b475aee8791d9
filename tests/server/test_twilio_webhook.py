"""Twilio voice webhook and status callbacks through the real app and embedded Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ADMIN_TOKEN
from voxgate.server.app import create_app
from voxgate.server.call_control import CALLS, CallRuntime
from voxgate.server.config import Config
from voxgate.server.services import Services
from voxgate.server.state import METRICS

PUBLIC_URL = "https://voice.example.com"
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "twilio-auth-token-0123456789abcdef"
NUMBER = "+15550100001"
CALLER = "+15550109999"


@dataclass
class TwilioEnv:
    """A running app with one tenant whose echo agent answers ``NUMBER`` on Twilio."""

    client: TestClient  # type: ignore[type-arg]
    services: Services
    runtime: CallRuntime
    config: Config
    tenant_id: str
    api_key: str
    agent_id: str

    def tenant_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def start_env(
    tmp_path: Path,
    *,
    public_url: str | None = PUBLIC_URL,
    quotas: dict[str, int] | None = None,
    template: str = "echo",
    secret: dict[str, str] | None = None,
) -> AsyncIterator[TwilioEnv]:
    config = Config(
        data_dir=tmp_path / "data",
        http_port=0,
        admin_token=ADMIN_TOKEN,
        public_url=public_url,
        drain_timeout=2.0,
    )
    services = await Services.open(config)
    try:
        await services.admin_tokens.ensure(ADMIN_TOKEN)
        app = create_app(config, services)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            body: dict[str, Any] = {"name": "acme"}
            if quotas:
                body["quotas"] = quotas
            created = await (await client.post("/system/tenants", json=body, headers=admin)).json()
            tenant_id, api_key = created["id"], created["api_key"]
            headers = {"Authorization": f"Bearer {api_key}"}
            base = f"/tenants/{tenant_id}/api"
            agent = await (
                await client.post(
                    f"{base}/agents", json={"name": "line", "template": template}, headers=headers
                )
            ).json()
            response = await client.post(
                f"{base}/numbers",
                json={"number": NUMBER, "provider": "twilio", "agent_id": agent["id"]},
                headers=headers,
            )
            assert response.status == 201, await response.text()
            value = secret or {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
            response = await client.put(f"{base}/secrets/twilio", json=value, headers=headers)
            assert response.status == 204
            yield TwilioEnv(
                client=client,
                services=services,
                runtime=app[CALLS],
                config=config,
                tenant_id=tenant_id,
                api_key=api_key,
                agent_id=agent["id"],
            )
    finally:
        await services.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[TwilioEnv]:
    async for value in start_env(tmp_path):
        yield value


def reference_signature(token: str, url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Twilio's algorithm written out independently of the code under test."""
    data = url + "".join(k + v for k, v in sorted(pairs))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def voice_form(
    call_sid: str, *, to: str = NUMBER, account_sid: str = ACCOUNT_SID
) -> list[tuple[str, str]]:
    return [
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("CallerCity", ""),  # empty values are signed too
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", to),
    ]


async def post_signed(
    env: TwilioEnv,
    form: Sequence[tuple[str, str]],
    *,
    path: str = "/twilio/webhook",
    signed_url: str | None = None,
    token: str = AUTH_TOKEN,
) -> tuple[int, str]:
    url = signed_url if signed_url is not None else PUBLIC_URL + path
    signature = reference_signature(token, url, form)
    response = await env.client.post(
        path, data=list(form), headers={"X-Twilio-Signature": signature}
    )
    return response.status, await response.text()


def stream_of(twiml: str) -> tuple[str | None, dict[str, str], list[str]]:
    """(stream url, parameters, verbs after <Connect>)."""
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    url: str | None = None
    params: dict[str, str] = {}
    after: list[str] = []
    for verb in root:
        if url is not None:
            after.append(verb.tag)
        if verb.tag == "Connect":
            stream = verb.find("Stream")
            assert stream is not None
            url = stream.get("url")
            params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return url, params, after


def sid(n: int) -> str:
    return "CA" + f"{n:032x}"


async def test_signed_webhook_answers_connect_stream_with_token(env: TwilioEnv) -> None:
    status, body = await post_signed(env, voice_form(sid(1)))
    assert status == 200, body
    url, params, after = stream_of(body)
    assert url == "wss://voice.example.com/twilio/media"
    assert len(params["token"]) >= 24
    assert after == ["Say", "Hangup"]  # apology fallback when the stream ends early
    record = await env.runtime.records.get(env.tenant_id, sid(1))
    assert (record.status, record.agent_id, record.from_number) == ("ringing", env.agent_id, CALLER)


async def test_signature_with_explicit_port_is_accepted(env: TwilioEnv) -> None:
    url = "https://voice.example.com:443/twilio/webhook"
    status, _ = await post_signed(env, voice_form(sid(2)), signed_url=url)
    assert status == 200


async def test_signature_over_query_string_and_repeated_params(env: TwilioEnv) -> None:
    form = [*voice_form(sid(3)), ("StirVerstat", "B"), ("StirVerstat", "A")]
    path = "/twilio/webhook?tenant=x&b=2"
    status, body = await post_signed(env, form, path=path)
    assert status == 200, body
    # Dropping one of the repeated values breaks the signature.
    signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + path, form[:-1])
    response = await env.client.post(path, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status == 403


@pytest.mark.parametrize(
    "case", ["wrong_token", "missing", "socket_url", "wrong_account", "tampered"]
)
async def test_bad_signature_is_403_and_counted(env: TwilioEnv, case: str) -> None:
    form = voice_form(sid(4))
    before = _metric(env, "voxgate_twilio_signature_failures_total")
    if case == "wrong_token":
        status, _ = await post_signed(env, form, token="not-the-token")
    elif case == "missing":
        response = await env.client.post("/twilio/webhook", data=form)
        status = response.status
    elif case == "socket_url":
        # Behind a proxy the socket address is not what Twilio signed.
        local = str(env.client.make_url("/twilio/webhook"))
        status, _ = await post_signed(env, form, signed_url=local)
    elif case == "wrong_account":
        other = voice_form(sid(4), account_sid="AC" + "b2" * 16)
        status, _ = await post_signed(env, other)
    else:
        signature = reference_signature(AUTH_TOKEN, PUBLIC_URL + "/twilio/webhook", form)
        tampered = [(k, "+15550000000" if k == "From" else v) for k, v in form]
        response = await env.client.post(
            "/twilio/webhook", data=tampered, headers={"X-Twilio-Signature": signature}
        )
        status = response.status
    assert status == 403
    assert _metric(env, "voxgate_twilio_signature_failures_total") == before + 1
    # Nothing was admitted or stored for a refused request.
    assert env.runtime.control.live_count(env.tenant_id) == 0


def _metric(env: TwilioEnv, name: str) -> float:
    registry = env.client.server.app[METRICS].registry
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


async def test_unknown_number_gets_polite_twiml(env: TwilioEnv) -> None:
    form = voice_form(sid(5), to="+15550177777")
    response = await env.client.post("/twilio/webhook", data=form)
    assert response.status == 200
    assert response.content_type == "text/xml"
    root = ET.fromstring(await response.text())
    assert [verb.tag for verb in root] == ["Say", "Hangup"]
    assert "not in service" in (root[0].text or "")


async def test_number_matches_without_plus(env: TwilioEnv) -> None:
    status, body = await post_signed(env, voice_form(sid(6), to=NUMBER.lstrip("+")))
    assert status == 200
    assert stream_of(body)[0] is not None


async def test_retries_get_the_same_twiml_and_one_admission(env: TwilioEnv) -> None:
    first = await post_signed(env, voice_form(sid(7)))
    second = await post_signed(env, voice_form(sid(7)))
    assert first == second
    assert env.runtime.control.live_count(env.tenant_id) == 1


async def test_concurrency_quota_answers_busy(tmp_path: Path) -> None:
    async for env in start_env(tmp_path, quotas={"max_concurrent_calls": 2, "max_cps": 100}):
        before = _metric(env, "voxgate_calls_rejected_total")
        answers = [await post_signed(env, voice_form(sid(10 + i))) for i in range(3)]
        assert [stream_of(b)[0] is not None for _, b in answers] == [True, True, False]
        assert ET.fromstring(answers[2][1])[0].tag == "Reject"
        assert ET.fromstring(answers[2][1])[0].get("reason") == "busy"
        assert _metric(env, "voxgate_calls_rejected_total") == before + 1
        record = await env.runtime.records.get(env.tenant_id, sid(12))
        assert (record.status, record.end_reason) == ("busy", "busy_concurrency")
        # A slot frees up when a call ends.
        env.runtime.control.release(sid(10))
        _, body = await post_signed(env, voice_form(sid(13)))
        assert stream_of(body)[0] is not None


async def test_cps_quota_answers_busy(tmp_path: Path) -> None:
    async for env in start_env(tmp_path, quotas={"max_concurrent_calls": 50, "max_cps": 2}):
        answers = [await post_signed(env, voice_form(sid(20 + i))) for i in range(4)]
        admitted = [stream_of(b)[0] is not None for _, b in answers]
        # Burst of one second's worth, then busy (the test runs well inside a second).
        assert admitted[:2] == [True, True]
        assert not all(admitted)
        record = await env.runtime.records.get(env.tenant_id, sid(20 + admitted.index(False)))
        assert record.end_reason == "busy_cps"


async def test_draining_answers_fallback(env: TwilioEnv) -> None:
    env.runtime.control.start_drain()
    status, body = await post_signed(env, voice_form(sid(30)))
    assert status == 200
    url, _, _ = stream_of(body)
    assert url is None
    assert [v.tag for v in ET.fromstring(body)] == ["Say", "Hangup"]


async def test_fallback_number_is_dialled(tmp_path: Path) -> None:
    secret = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "fallback_number": "+15550142"}
    async for env in start_env(tmp_path, secret=secret):
        _, body = await post_signed(env, voice_form(sid(31)))
        _, _, after = stream_of(body)
        assert after == ["Dial"]
        assert ET.fromstring(body)[1].text == "+15550142"


async def test_stream_url_follows_http_public_url(tmp_path: Path) -> None:
    async for env in start_env(tmp_path, public_url="http://gw.example.net:8081/base"):
        form = voice_form(sid(32))
        status, body = await post_signed(
            env, form, signed_url="http://gw.example.net:8081/base/twilio/webhook"
        )
        assert status == 200, body
        assert stream_of(body)[0] == "ws://gw.example.net:8081/base/twilio/media"


async def test_status_callback_updates_the_record(env: TwilioEnv) -> None:
    await post_signed(env, voice_form(sid(40)))
    form = [
        *voice_form(sid(40)),
        ("CallDuration", "17"),
    ]
    form = [(k, "no-answer" if k == "CallStatus" else v) for k, v in form]
    status, _ = await post_signed(env, form, path="/twilio/status")
    assert status == 204
    record = await env.runtime.records.get(env.tenant_id, sid(40))
    assert record.status == "no_answer"
    assert record.provider_status == "no-answer"
    assert record.provider_duration == 17.0
    # The admission was released: the media will never come.
    assert env.runtime.control.live_count(env.tenant_id) == 0
    # Unsigned callbacks change nothing.
    response = await env.client.post("/twilio/status", data=form)
    assert response.status == 403
