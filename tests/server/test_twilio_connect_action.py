"""``<Connect action>``: Twilio asks what to do once the stream ends; a normal
ending hangs up, a failed stream gets the fallback, and the record says which."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from loadtest.twilio_caller import CallerConfig, run_call
from tests.server.test_twilio_media import Peer
from tests.server.test_twilio_webhook import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    PUBLIC_URL,
    TwilioEnv,
    post_signed,
    reference_signature,
    sid,
    start_env,
    stream_of,
    voice_form,
)

ACTION = "/twilio/connect-action"


@pytest.fixture
async def prompt_env(tmp_path: Path) -> AsyncIterator[TwilioEnv]:
    async for value in start_env(tmp_path, template="prompt"):
        yield value


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[TwilioEnv]:
    async for value in start_env(tmp_path):
        yield value


def action_form(call_sid: str) -> list[tuple[str, str]]:
    return [*voice_form(call_sid)[:3], ("CallStatus", "in-progress"), *voice_form(call_sid)[4:]]


async def post_action(env: TwilioEnv, call_sid: str) -> tuple[int, list[str], str]:
    status, body = await post_signed(env, action_form(call_sid), path=ACTION)
    verbs = [verb.tag for verb in ET.fromstring(body)] if status == 200 else []
    return status, verbs, body


async def connect_action_events(env: TwilioEnv, call_sid: str) -> list[str]:
    detail = await env.runtime.records.detail(env.tenant_id, call_sid)
    return [e.detail or "" for e in detail.events if e.kind == "connect_action"]


async def test_webhook_connect_names_the_action_url(env: TwilioEnv) -> None:
    status, body = await post_signed(env, voice_form(sid(1)))
    assert status == 200
    connect = ET.fromstring(body).find("Connect")
    assert connect is not None
    assert connect.get("action") == PUBLIC_URL + ACTION


async def test_agent_hangup_answers_hangup_not_the_apology(prompt_env: TwilioEnv) -> None:
    env = prompt_env
    status, body = await post_signed(env, voice_form(sid(2)))
    assert status == 200
    token = stream_of(body)[1]["token"]
    ws = await env.client.ws_connect("/twilio/media")
    peer = Peer(ws, "MZ" + f"{2:032x}")
    await peer.start(token, sid(2))
    # Play the prompt like Twilio: echo every mark; the agent hangs up after its last.
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if data["event"] == "mark":
                await peer.event("mark", {"mark": data["mark"]})
    assert ws.close_code == 1000
    status, verbs, _ = await post_action(env, sid(2))
    assert status == 200
    assert verbs == ["Hangup"]
    assert await connect_action_events(env, sid(2)) == ["hangup (agent_hangup)"]


async def test_caller_hangup_in_the_final_record_answers_hangup(env: TwilioEnv) -> None:
    # The live call is gone: the record's end reason decides (e.g. a retried action).
    await post_signed(env, voice_form(sid(7)))
    env.runtime.control.release(sid(7))
    await env.runtime.records.update(
        env.tenant_id, sid(7), status="completed", end_reason="caller_hangup"
    )
    assert (await post_action(env, sid(7)))[1] == ["Hangup"]


async def test_stream_that_never_connected_gets_the_fallback(env: TwilioEnv) -> None:
    await post_signed(env, voice_form(sid(3)))
    status, verbs, body = await post_action(env, sid(3))
    assert status == 200
    assert verbs == ["Say", "Hangup"]
    assert "sorry" in body.lower()
    assert await connect_action_events(env, sid(3)) == ["fallback (stream failed)"]


async def test_lost_worker_gets_the_fallback(env: TwilioEnv) -> None:
    await post_signed(env, voice_form(sid(4)))
    env.runtime.control.release(sid(4))
    await env.runtime.records.update(
        env.tenant_id, sid(4), status="failed", end_reason="worker_lost"
    )
    _, verbs, _ = await post_action(env, sid(4))
    assert verbs == ["Say", "Hangup"]
    assert await connect_action_events(env, sid(4)) == ["fallback (worker_lost)"]


async def test_fallback_number_is_dialled_after_a_failed_stream(tmp_path: Path) -> None:
    secret = {
        "account_sid": voice_form(sid(5))[0][1],
        "auth_token": "twilio-auth-token-0123456789abcdef",
        "fallback_number": "+15550142",
    }
    async for env in start_env(tmp_path, secret=secret):
        await post_signed(env, voice_form(sid(5)))
        _, verbs, body = await post_action(env, sid(5))
        assert verbs == ["Dial"]
        assert "+15550142" in body


async def test_unsigned_action_is_403(env: TwilioEnv) -> None:
    await post_signed(env, voice_form(sid(6)))
    form = action_form(sid(6))
    response = await env.client.post(ACTION, data=form)
    assert response.status == 403
    signature = reference_signature("not-the-token", PUBLIC_URL + ACTION, form)
    response = await env.client.post(ACTION, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status == 403


async def test_action_route_is_in_openapi(env: TwilioEnv) -> None:
    document = await (await env.client.get("/openapi.json")).json()
    assert "post" in document["paths"][ACTION]


async def test_load_caller_follows_the_action_like_twilio(prompt_env: TwilioEnv) -> None:
    env = prompt_env
    config = CallerConfig(
        url=str(env.client.make_url("")).rstrip("/"),
        public_url=PUBLIC_URL,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        to=NUMBER,
        audio=("book_appointment",),
        silence_before_s=0.0,
        duration_s=8.0,
        max_call_s=20.0,
    )
    result = await run_call(config)
    report = result.report
    assert report.ended_by == "server", report.error
    assert report.error is None
    assert report.fallback_verbs == ("Say", "Hangup")  # written, but never reached
    assert report.action_verbs == ("Hangup",)
