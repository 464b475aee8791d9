"""Browser calls through the real app: signalling, media with the echo agent over a
real aiortc peer on loopback, DTMF, hang-up by DELETE, refusals, and junk offers."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.webrtc_caller import BrowserCaller, OfferRefused
from tests.conftest import ApiServer
from tests.media.test_webrtc_channel import speech_like
from tests.server.test_call_lifecycle import FakeChannel
from voxgate.media.call import Call as MediaCall
from voxgate.media.call import EndReason
from voxgate.server.call_control import CALLS, CallControl, LiveCall
from voxgate.server.routes_webrtc import WEBRTC
from voxgate.server.supervisor import SupervisorConfig
from voxgate.server.worker_agent import SPEECH


@dataclass
class Tenant:
    id: str
    key: str
    agent_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def base(self) -> str:
        return f"/tenants/{self.id}/api"


async def make_tenant(api: ApiServer, name: str, template: str = "echo", **quotas: Any) -> Tenant:
    body: dict[str, Any] = {"name": name}
    if quotas:
        body["quotas"] = quotas
    created = await api.client.post("/system/tenants", json=body, headers=api.admin())
    assert created.status == 201, await created.text()
    data = await created.json()
    headers = api.bearer(data["api_key"])
    agent = await api.client.post(
        f"/tenants/{data['id']}/api/agents",
        json={"name": "desk", "template": template},
        headers=headers,
    )
    assert agent.status == 201, await agent.text()
    return Tenant(data["id"], data["api_key"], (await agent.json())["id"])


def caller(
    api: ApiServer, session: aiohttp.ClientSession, tenant: Tenant, **kw: Any
) -> BrowserCaller:
    return BrowserCaller(
        session,
        str(api.client.make_url("")).rstrip("/"),
        tenant.id,
        tenant.agent_id,
        tenant.key,
        **kw,
    )


async def record_of(api: ApiServer, tenant: Tenant, call_id: str) -> Any:
    """The call's detail once its ending is done (the call left the registry: the
    record's last write happens before that)."""
    await call_left(api.client.app[CALLS].control, call_id, within=10)
    response = await api.client.get(f"{tenant.base}/calls/{call_id}", headers=tenant.headers)
    assert response.status == 200
    return await response.json()


async def post_offer(api: ApiServer, tenant: Tenant, body: Any) -> tuple[int, Any]:
    response = await api.client.post(
        f"{tenant.base}/agents/{tenant.agent_id}/webrtc", json=body, headers=tenant.headers
    )
    return response.status, await response.json()


@pytest.mark.parametrize("codec", ["pcmu", "opus"])
async def test_echo_call_hears_itself_keys_and_hangs_up_by_delete(
    api: ApiServer, codec: str
) -> None:
    tenant = await make_tenant(api, "web-one")
    # Browsers offer both; the server answers G.711 unless told to prefer Opus.
    api.client.app[WEBRTC].codecs = ("opus", "pcmu") if codec == "opus" else ("pcmu", "opus")
    async with aiohttp.ClientSession() as session:
        browser = caller(api, session, tenant)
        try:
            call_id = await browser.call()
            await browser.wait_connected(10)
            await asyncio.wait_for(browser.dtmf_open.wait(), 10)
            played = browser.mic.play(speech_like(50))  # one second
            sent_at = await asyncio.wait_for(played, 5)
            heard = await browser.wait_sound(sent_at - 1.0, within=5)
            assert heard is not None  # the echo came back
            browser.send_digits("1#x")
            live = api_live(api, call_id)
            assert live is not None and live.provider == "webrtc"
            await wait_for(lambda: live.channel.counters.dtmf_digits == 2)
            status = await browser.hangup()
            assert status == 204
            await browser.wait_closed(10)
        finally:
            await browser.close()
    detail = await record_of(api, tenant, call_id)
    record = detail["call"]
    assert record["provider"] == "webrtc"
    assert record["from_number"] == "browser" and record["to_number"] == tenant.agent_id
    assert record["end_reason"] == "caller_hangup" and record["status"] == "completed"
    assert record["frames_in"] > 40 and record["frames_out"] > 20
    kinds = [e["kind"] for e in detail["events"]]
    assert "webrtc_connected" in kinds and "webrtc_media" in kinds
    assert [e["detail"] for e in detail["events"] if e["kind"] == "dtmf"] == ["1", "#"]
    media = next(e["detail"] for e in detail["events"] if e["kind"] == "webrtc_media")
    assert f"codec={codec}" in media and "dtmf_ignored=1" in media
    assert api.services is not None
    assert len(api.client.app[CALLS].control) == 0  # quota released


def api_live(api: ApiServer, call_id: str) -> Any:
    return api.client.app[CALLS].control.get(call_id)


class _LeftWatch:
    """A ``CallObserver`` that sets ``left`` when ``call_id`` leaves the registry."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.left = asyncio.Event()

    def started(self, live: LiveCall) -> None:
        return None

    def ended(self, live: LiveCall) -> None:
        if live.call_id == self.call_id:
            self.left.set()


async def call_left(control: CallControl, call_id: str, within: float) -> None:
    """Wait until ``call_id`` has left the live registry (its ending is done)."""
    watch = _LeftWatch(call_id)
    control.observers.append(watch)
    try:
        if control.get(call_id) is not None:
            await asyncio.wait_for(watch.left.wait(), within)
    finally:
        control.observers.remove(watch)


async def wait_for(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_browser_closing_ends_the_call(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-two")
    async with aiohttp.ClientSession() as session:
        browser = caller(api, session, tenant, codecs=("pcmu",))
        call_id = await browser.call()
        await browser.wait_connected(10)
        await browser.close()
    detail = await record_of(api, tenant, call_id)
    assert detail["call"]["end_reason"] == "caller_hangup"
    media = [e["detail"] for e in detail["events"] if e["kind"] == "webrtc_media"]
    assert "codec=pcmu" in media[0]


async def test_connection_never_up_ends_the_call_and_releases_the_quota(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-three", max_concurrent_calls=1)
    api.client.app[WEBRTC].connect_timeout = 0.5
    async with aiohttp.ClientSession() as session:
        browser = caller(api, session, tenant)
        await browser.call()
        call_id = browser.call_id
        assert call_id is not None
        # The browser vanishes before ICE: its offer is answered, nothing connects.
        await browser.close()
        second = caller(api, session, tenant)
        with pytest.raises(OfferRefused) as refused:
            await second.call()
        assert refused.value.status == 429 and refused.value.code == "busy_concurrency"
    record = (await record_of(api, tenant, call_id))["call"]
    assert record["end_reason"] in ("timeout", "caller_hangup")
    assert len(api.client.app[CALLS].control) == 0


# -- refusals ----------------------------------------------------------------------


async def browser_offer() -> str:
    """A real offer, as a browser makes it (audio sendrecv + the dtmf data channel)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("dtmf")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_a_key_of_another_tenant_gets_404_and_no_call(api: ApiServer) -> None:
    owner = await make_tenant(api, "web-owner")
    other = await make_tenant(api, "web-other")
    response = await api.client.post(
        f"{owner.base}/agents/{owner.agent_id}/webrtc",
        json={"type": "offer", "sdp": await browser_offer()},
        headers=other.headers,
    )
    assert response.status == 404
    assert len(api.client.app[CALLS].control) == 0


async def test_unknown_agent_suspended_tenant_and_draining(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-refusals")
    offer = {"type": "offer", "sdp": await browser_offer()}
    response = await api.client.post(
        f"{tenant.base}/agents/ag_nosuchagent/webrtc", json=offer, headers=tenant.headers
    )
    assert response.status == 404
    calls = api.client.app[CALLS]
    calls.control.start_drain()
    status, body = await post_offer(api, tenant, offer)
    assert (status, body["error"]["code"]) == (503, "draining")
    calls.control._draining = False  # this app goes on serving the next checks
    suspended = await api.client.post(f"/system/tenants/{tenant.id}/suspend", headers=api.admin())
    assert suspended.status == 200
    response = await api.client.post(
        f"{tenant.base}/agents/{tenant.agent_id}/webrtc", json=offer, headers=api.admin()
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "suspended"
    assert len(calls.control) == 0


async def test_no_speech_worker_is_a_503_before_answering(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-flow", template="demo-receptionist")
    speech = api.client.app[SPEECH]
    speech.supervisor.config = SupervisorConfig(prewarm=0, max_workers_total=0)
    status, body = await post_offer(api, tenant, {"type": "offer", "sdp": await browser_offer()})
    assert status == 503 and body["error"]["code"] == "no_capacity", body
    assert "speech worker" in body["error"]["message"]
    assert len(api.client.app[CALLS].control) == 0


async def test_delete_hangs_up_any_live_call_of_the_tenant_only(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-delete")
    other = await make_tenant(api, "web-delete-other")
    call = MediaCall(
        "sip_0123456789abcdef", tenant_id=tenant.id, agent_id=tenant.agent_id,
        provider="sip", from_number="+1555", to_number="+1666", now=time.time(),
    )  # fmt: skip
    call.answer(time.time())
    channel = FakeChannel(call, api.client.app[CALLS].clock)
    control = api.client.app[CALLS].control
    control.attach(call, channel)
    try:
        path = f"/calls/{call.call_id}"
        response = await api.client.delete(f"{other.base}{path}", headers=other.headers)
        assert response.status == 404 and not channel.closed  # not B's call to end
        response = await api.client.delete(
            f"{tenant.base}/calls/nosuchcall", headers=tenant.headers
        )
        assert response.status == 404
        response = await api.client.delete(f"{tenant.base}{path}", headers=tenant.headers)
        assert response.status == 204
        assert channel.closed and channel.transport_closed == [EndReason.AGENT_HANGUP]
        assert [e.detail for e in call.events if e.kind == "hangup_requested"] == ["api"]
    finally:
        control.release(call.call_id)


# -- junk ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"type": "answer", "sdp": "v=0"}, 400, "bad_offer"),
        ({"type": "offer", "sdp": ""}, 400, "malformed_sdp"),
        ({"type": "offer", "sdp": "hello"}, 400, "malformed_sdp"),
        ({"type": "offer", "sdp": "v=0\r\nm=audio x RTP/AVP 0\r\n"}, 400, "malformed_sdp"),
        ({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 20000 + "m="}, 413, "sdp_too_large"),
        ({"type": "offer"}, 422, "invalid"),
        ({"sdp": "v=0"}, 422, "invalid"),
        ({"type": 1, "sdp": "v=0"}, 422, "invalid"),
    ],
)
async def test_bad_bodies(api: ApiServer, body: Any, status: int, code: str) -> None:
    tenant = await make_tenant(api, "web-junk")
    got, answer = await post_offer(api, tenant, body)
    assert (got, answer["error"]["code"]) == (status, code), answer


def _edited(sdp: str, drop: str = "", replace: tuple[str, str] = ("", "")) -> str:
    lines = [line for line in sdp.split("\r\n") if not (drop and line.startswith(drop))]
    text = "\r\n".join(lines)
    return text.replace(*replace) if replace[0] else text


async def test_unusable_offers_say_why(api: ApiServer) -> None:
    tenant = await make_tenant(api, "web-unusable")
    sdp = await browser_offer()
    cases = {
        "missing_dtls": _edited(sdp, drop="a=fingerprint"),
        "missing_ice_credentials": _edited(sdp, drop="a=ice-pwd"),
        "bad_direction": _edited(sdp, replace=("a=sendrecv", "a=sendonly")),
        "no_common_codec": _edited(sdp, drop="a=rtpmap").replace(
            "UDP/TLS/RTP/SAVPF 96 9 0 8", "UDP/TLS/RTP/SAVPF 120"
        ),
        "unsupported_media": _edited(sdp, replace=("m=audio", "m=video")),
        "rtcp_mux_required": _edited(sdp, drop="a=rtcp-mux"),
        "no_audio": re.sub(r"m=audio \d+", "m=audio 0", sdp),
    }
    for code, text in cases.items():
        status, body = await post_offer(api, tenant, {"type": "offer", "sdp": text})
        assert (status, body.get("error", {}).get("code")) == (400, code), (code, body)
        assert body["error"]["message"]
    assert len(api.client.app[CALLS].control) == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.text(max_size=400)
    | st.just("v=0\r\n")
    | st.builds(lambda s: "v=0\r\nm=audio " + s, st.text(max_size=200))
)
async def test_junk_sdp_is_never_a_500(api: ApiServer, junk: str) -> None:
    response = await api.client.post(
        "/tenants/t_nope/api/agents/ag_x/webrtc", json={"type": "offer", "sdp": junk},
        headers=api.admin(),
    )  # fmt: skip
    assert response.status in (400, 404, 413), await response.text()
