"""Browser calls over WebRTC: the signalling route and the call's transport.

``POST /tenants/{tenant_id}/api/agents/{agent_id}/webrtc`` takes a browser's
``{"type": "offer", "sdp"}`` and answers 201 ``{"type": "answer", "sdp",
"call_id"}``, non-trickle (the answer carries the server's ICE candidates).
Checks run cheapest first, and nothing is allocated for a refused offer:

1. ``type`` must be ``"offer"`` (400 ``bad_offer``); the SDP at most 64 KiB
   (413 ``sdp_too_large``) and usable (400 with a ``code`` and the reason:
   ``malformed_sdp``, ``no_audio``, ``no_common_codec``, ...);
2. the agent exists (404), the tenant is active (403 ``suspended``), the
   server is not draining (503 ``draining``);
3. a ``flow`` agent's tenant can get a speech worker now (503
   ``no_capacity``: the supervisor's answer before we answer, so the browser
   never connects to a call that would end at once; the answer may still
   change before the call starts, and then the call ends with
   ``worker_lost``);
4. admission, as for Twilio and SIP: the tenant's concurrent-call and
   calls-per-second quotas (429 ``busy_concurrency`` / ``busy_cps``);
5. the answer, bounded by ``answer_timeout`` (gathering against a STUN or
   TURN server can take seconds; 503 ``ice_gathering_timeout``).

The call then runs detached from the request through the shared
:class:`~voxgate.server.call_lifecycle.CallLifecycle`, with
:class:`WebRtcTransport` as its transport: the agent starts at once (its
worker lease overlaps ICE and DTLS; its greeting waits in the outbound
queue), and audio flows once the peer connection is up. A connection not up
within ``connect_timeout`` ends the call (``timeout``), one that fails ends
it (``failed``), one the browser closes ends it (``caller_hangup``). Call
records say ``"provider": "webrtc"``, from ``browser`` to the agent's id.

The aiortc stack (the ``webrtc`` extra) is imported with this module, at
start-up: imported on a first call, even in a thread, it holds the GIL long
enough to stall every live call's media. Without it the route answers 503
``webrtc_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from aiohttp import web

from voxgate.media.call import Call as MediaCall
from voxgate.media.call import CallEvent, EndReason
from voxgate.server.call_control import CALLS, Admission
from voxgate.server.call_lifecycle import CallLifecycle, open_recording
from voxgate.server.config import IceServer
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.state import CONFIG, SERVICES
from voxgate.server.worker_agent import SPEECH
from voxgate.tenants.models import Agent

WEBRTC_MISSING: str | None = None
try:
    from aiortc import RTCIceServer

    from voxgate.media.webrtc_channel import WebRtcMediaChannel
    from voxgate.media.webrtc_peer import (
        DEFAULT_CODECS,
        CheckedOffer,
        OfferError,
        PeerOutcome,
        WebRtcPeer,
        check_offer,
    )
except ImportError as exc:  # the ``webrtc`` extra is not installed
    WEBRTC_MISSING = f"browser calls need the webrtc extra (missing {exc.name})"
    DEFAULT_CODECS = ("opus", "pcmu", "pcma")

__all__ = [
    "WEBRTC",
    "WebRtcAnswer",
    "WebRtcOffer",
    "WebRtcRuntime",
    "WebRtcTransport",
    "install_webrtc",
    "register",
]

log = logging.getLogger("voxgate.webrtc")

PROVIDER = "webrtc"
FROM_BROWSER = "browser"


class WebRtcOffer(msgspec.Struct, kw_only=True):
    """A browser's offer: ``{"type": "offer", "sdp": "v=0..."}``."""

    type: str
    sdp: str


class WebRtcAnswer(msgspec.Struct, kw_only=True):
    """The server's answer, with every candidate, and the new call's id."""

    type: Literal["answer"]
    sdp: str
    call_id: str


@dataclass(slots=True)
class WebRtcRuntime:
    """What the WebRTC routes of one app share (settable before calls arrive)."""

    ice_servers: tuple[IceServer, ...] = ()
    answer_timeout: float = 10.0  # offer in → answer out, gathering included
    connect_timeout: float = 20.0  # answer out → ICE and DTLS up (the console waits 20 s)
    codecs: tuple[str, ...] = DEFAULT_CODECS  # answer preference
    loopback_candidates: bool = True
    calls: set[asyncio.Task[None]] = field(default_factory=set)

    def rtc_ice_servers(self) -> list[RTCIceServer]:
        return [
            RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
            for s in self.ice_servers
        ]


WEBRTC = web.AppKey("voxgate.webrtc", WebRtcRuntime)


def install_webrtc(app: web.Application) -> WebRtcRuntime:
    """Browser calls on this app (after ``install_calls``): their runtime, and the
    cancellation of calls still running at cleanup (the drain has hung them up)."""
    runtime = WebRtcRuntime(ice_servers=app[CONFIG].ice_servers)
    app[WEBRTC] = runtime

    async def on_cleanup(_app: web.Application) -> None:
        tasks = list(runtime.calls)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    app.on_cleanup.append(on_cleanup)
    return runtime


class WebRtcTransport:
    """A browser call's ``CallTransport``: waits for the connection, then for its end."""

    def __init__(
        self, peer: WebRtcPeer, channel: WebRtcMediaChannel, connect_timeout: float
    ) -> None:
        self.peer = peer
        self.channel = channel
        self.connect_timeout = connect_timeout
        self.connected_at: float | None = None

    def _reason(self, outcome: PeerOutcome | None) -> EndReason:
        if outcome is PeerOutcome.FAILED:
            return EndReason.FAILED
        if outcome is PeerOutcome.CLOSED:
            return EndReason.CALLER_HANGUP
        return EndReason.ERROR

    async def serve(self) -> None:
        peer, channel = self.peer, self.channel
        loop = asyncio.get_running_loop()
        ended = loop.create_task(peer.wait_ended())
        try:
            if not await self._connected(ended):
                outcome = peer.outcome
                if outcome is None:
                    reason, why = EndReason.TIMEOUT, f"not connected in {self.connect_timeout:g} s"
                else:
                    reason, why = self._reason(outcome), f"connection {outcome.value}"
                channel.call.record(time.time(), "webrtc_not_connected", why)
                channel.deliver_closed(reason)
                return
            self.connected_at = time.time()
            channel.call.record(self.connected_at, "webrtc_connected", peer.codec or "")
            channel.start()
            outcome = await ended
            # A hangup of ours closed the connection: its own reason stands.
            if not channel.closed and channel.call.end_reason is None:
                if outcome is PeerOutcome.FAILED:
                    channel.call.record(time.time(), "webrtc_failed", "ice or dtls")
                channel.deliver_closed(self._reason(outcome))
        finally:
            ended.cancel()

    async def _connected(self, ended: asyncio.Task[PeerOutcome]) -> bool:
        if self.peer.connected.is_set():
            return True
        up = asyncio.get_running_loop().create_task(self.peer.connected.wait())
        try:
            await asyncio.wait(
                (up, ended), timeout=self.connect_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            up.cancel()
        return self.peer.connected.is_set() and not self.peer.ended

    def abort(self) -> None:
        # A hangup of ours may still be closing the connection: its reason stands.
        reason = self.channel.call.end_reason or self._reason(self.peer.outcome)
        self.channel.deliver_closed(reason)

    async def close(self) -> Sequence[CallEvent]:
        await self.peer.close()
        counters = self.channel.counters.as_dict()
        detail = " ".join(f"{name}={value}" for name, value in counters.items() if value)
        return [CallEvent(time.time(), "webrtc_media", f"codec={self.peer.codec} {detail}")]


def _admission_error(result: Admission) -> ApiError:
    if result is Admission.DRAINING:
        return ApiError(503, "draining", "the server is draining and takes no new calls")
    what = "concurrent calls" if result is Admission.BUSY_CONCURRENCY else "calls per second"
    return ApiError(429, result.value, f"the tenant's {what} quota is reached")


async def _offer(call: Call[WebRtcOffer]) -> web.Response:
    app = call.request.app
    body = call.body
    if body.type != "offer":
        raise ApiError(400, "bad_offer", f'type must be "offer", not {body.type[:32]!r}')
    if WEBRTC_MISSING is not None:
        raise ApiError(503, "webrtc_unavailable", WEBRTC_MISSING)
    try:
        offer = check_offer(body.sdp)
    except OfferError as exc:
        raise ApiError(413 if exc.code == "sdp_too_large" else 400, exc.code, exc.message) from None
    services = app[SERVICES]
    calls = app[CALLS]
    webrtc = app[WEBRTC]
    tenant_id, agent_id = call.tenant_id, call.param("agent_id")
    agent = await services.agents.get(tenant_id, agent_id)  # NotFound → 404
    tenant = await services.registry.get(tenant_id)
    if tenant.status != "active":
        raise ApiError(403, "suspended", "the tenant is suspended")
    control = calls.control
    if services.status.draining or control.draining:
        control.start_drain()
        calls.metrics.rejected.labels(tenant_id, Admission.DRAINING.value).inc()
        raise _admission_error(Admission.DRAINING)
    speech = app.get(SPEECH)
    if agent.kind == "flow" and speech is not None:
        refusal = speech.supervisor.refusal(tenant_id, tenant.quotas)
        if refusal is not None:
            calls.metrics.rejected.labels(tenant_id, "no_capacity").inc()
            raise ApiError(503, "no_capacity", f"no speech worker for this call: {refusal}")
    call_id = "webrtc_" + secrets.token_hex(12)
    admission = control.admit(tenant_id, agent_id, PROVIDER, call_id, tenant.quotas)
    if admission is not Admission.ADMITTED:
        raise _admission_error(admission)
    try:
        answer = await _answer(call, offer, call_id, agent_id, webrtc, agent)
    except BaseException:
        control.release(call_id)
        raise
    return web.Response(
        status=201, body=msgspec.json.encode(answer), content_type="application/json"
    )


async def _answer(
    call: Call[WebRtcOffer],
    offer: CheckedOffer,
    call_id: str,
    agent_id: str,
    webrtc: WebRtcRuntime,
    agent: Agent,
) -> WebRtcAnswer:
    """Answer the admitted offer and start the call; on failure nothing is left open."""
    app = call.request.app
    calls = app[CALLS]
    loop = asyncio.get_running_loop()
    wall = time.time()
    media_call = MediaCall(
        call_id,
        tenant_id=call.tenant_id,
        agent_id=agent_id,
        provider=PROVIDER,
        from_number=FROM_BROWSER,
        to_number=agent_id,
        now=wall,
    )
    peer = WebRtcPeer(
        webrtc.rtc_ice_servers(), loopback=webrtc.loopback_candidates, codecs=webrtc.codecs
    )
    channel = WebRtcMediaChannel(media_call, calls.clock, peer.close)
    try:
        async with asyncio.timeout(webrtc.answer_timeout):
            sdp = await peer.answer(offer, channel)
    except OfferError as exc:
        await peer.close()
        raise ApiError(400, exc.code, exc.message) from None
    except TimeoutError:
        await peer.close()
        raise ApiError(
            503, "ice_gathering_timeout", "gathering ICE candidates took too long"
        ) from None
    except BaseException:
        await asyncio.shield(peer.close())
        raise
    media_call.answer(time.time())
    recording = open_recording(calls.writer, app[CONFIG].data_dir, media_call, loop.time())
    if recording is not None:
        channel.recorder = recording.recorder
    transport = WebRtcTransport(peer, channel, webrtc.connect_timeout)
    lifecycle = CallLifecycle(calls)
    task = loop.create_task(
        lifecycle.run(
            channel, calls.agents.create(agent, media_call), transport, recording=recording
        ),
        name=f"webrtc-{call_id}",
    )
    webrtc.calls.add(task)
    task.add_done_callback(webrtc.calls.discard)
    log.info("call %s: browser call to agent %s answered (%s)", call_id, agent_id, peer.codec)
    return WebRtcAnswer(type="answer", sdp=sdp, call_id=call_id)


def register(table: RouteTable) -> None:
    """Declare the WebRTC signalling route on ``table``."""

    @table.route(
        "POST", "/tenants/{tenant_id}/api/agents/{agent_id}/webrtc", auth=Auth.TENANT,
        body=WebRtcOffer, response=WebRtcAnswer, status=201, tags=("calls",),
        errors=(400, 403, 404, 413, 422, 429, 503),
        summary="Browser call to the agent: a WebRTC offer in, the answer (non-trickle, "
        "with candidates) and the call's id out",
    )  # fmt: skip
    async def webrtc_offer(call: Call[WebRtcOffer]) -> web.StreamResponse:
        return await _offer(call)
