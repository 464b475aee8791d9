"""Twilio edge: the signed voice webhook, status callbacks and the Media Streams socket.

``POST /twilio/webhook`` finds the tenant by the called number, checks
``AccountSid`` against the tenant's ``twilio`` secret and the
``X-Twilio-Signature`` against the URL Twilio used (built from
``--public-url``, with and without port), applies admission control, and
answers TwiML: ``<Connect action=…><Stream>`` carrying a one-time call token.
Twilio may retry a webhook: the answer is stored per ``CallSid`` and
replayed, so a retry never admits a second call or mints a second token.

``POST /twilio/connect-action`` is where Twilio goes when the stream ends.
A call the agent or caller ended normally gets ``<Hangup/>``; a stream that
failed (socket lost, worker lost, error, never connected) gets the fallback
(apology, or a ``<Dial>`` to the tenant's ``fallback_number`` in its
``twilio`` secret). Without ``action`` Twilio would run the verbs after
``<Connect>`` on every ending, so a caller whose agent said goodbye would
hear the apology. The fallback is still written after ``<Connect>``: Twilio
never reaches it while ``action`` is set, but it documents the answer and
serves a TwiML consumer that ignores ``action``.

``WS /twilio/media`` waits for ``start``, redeems the token (unknown, expired
or reused → close 1008), and runs the agent on a ``TwilioMediaChannel``
until either side hangs up, through the shared
:class:`~voxgate.server.call_lifecycle.CallLifecycle` (record at start and
end, recording, release); the session is the lifecycle's transport.

The media path is per frame and per call, so it is kept lean: outbound
media frames are written to the socket's transport synchronously (RFC 6455
framing, server frames are unmasked) instead of through two coroutines of
aiohttp's writer, and the stall timer that fills silence when Twilio stops
sending is one lazily re-armed loop timer per call, not a receive timeout
per message (which costs a timer arm and cancel for every frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import struct
import time
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import msgspec
from aiohttp import WSMsgType, web

from voxgate.media.call import Call as MediaCall
from voxgate.media.call import CallEvent, EndReason
from voxgate.media.channel import CallAgent
from voxgate.media.twilio_channel import DirectTwilioMediaChannel, TwilioMediaChannel
from voxgate.media.twilio_signature import validate_signature
from voxgate.media.twilio_stream import StreamEvent, StreamStarted, TwilioStreamState
from voxgate.server.agent_host import FallbackAgent
from voxgate.server.call_control import CALLS, Admission, CallRuntime
from voxgate.server.call_lifecycle import CallLifecycle, open_recording
from voxgate.server.config import Config
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, BodyKind, Call, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import CONFIG, SERVICES
from voxgate.tenants import keyspace
from voxgate.tenants.calls import CALL_ID_PATTERN, CallRecord, CallRecordStatus
from voxgate.tenants.errors import NotFound, StoreUnavailable
from voxgate.tenants.store import to_bytes

__all__ = [
    "CONNECT_ACTION_PATH",
    "MEDIA_PATH",
    "STATUS_PATH",
    "WEBHOOK_PATH",
    "StreamGrant",
    "TwilioConnectAction",
    "TwilioStatusCallback",
    "TwilioVoiceWebhook",
    "issue_stream_token",
    "register",
]

log = logging.getLogger("voxgate.twilio")

WEBHOOK_PATH = "/twilio/webhook"
STATUS_PATH = "/twilio/status"
MEDIA_PATH = "/twilio/media"
CONNECT_ACTION_PATH = "/twilio/connect-action"

TOKEN_TTL = 60  # seconds a call token stays redeemable
TWIML_TTL = 600  # seconds a webhook answer is replayed to retries
START_TIMEOUT = 10.0  # seconds from socket open to the ``start`` message
AGENT_STOP_TIMEOUT = 2.0  # also bounds our close of the socket at the call's end
MAX_WS_MESSAGE = 256 * 1024
# Bytes queued in the socket's transport beyond which the peer counts as not
# reading (~10 s of one call's media): the call ends instead of growing memory.
MAX_WRITE_BACKLOG = 512 * 1024

_WS_TEXT = 0x81  # FIN + text opcode
_WS_LEN16 = struct.Struct("!BBH")
_WS_LEN64 = struct.Struct("!BBQ")

_CALL_ID = re.compile(CALL_ID_PATTERN)

APOLOGY = "We are sorry, the agent cannot take your call right now. Please try again later."
UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."


class TwilioVoiceWebhook(msgspec.Struct, kw_only=True, rename={"from_": "From"}):
    """The voice webhook's form fields voxgate uses (Twilio sends more; all are signed)."""

    AccountSid: str = ""
    CallSid: str = ""
    To: str = ""
    from_: str = ""
    CallStatus: str = ""
    Direction: str = ""


class TwilioStatusCallback(msgspec.Struct, kw_only=True, rename={"from_": "From"}):
    """A call status callback's form fields voxgate uses."""

    AccountSid: str = ""
    CallSid: str = ""
    To: str = ""
    from_: str = ""
    CallStatus: str = ""
    CallDuration: str = ""


class TwilioConnectAction(msgspec.Struct, kw_only=True, rename={"from_": "From"}):
    """The ``<Connect action>`` request's form fields voxgate uses."""

    AccountSid: str = ""
    CallSid: str = ""
    To: str = ""
    from_: str = ""
    CallStatus: str = ""


class StreamGrant(msgspec.Struct, kw_only=True):
    """What a call token stands for; stored under the token's hash for ``TOKEN_TTL``."""

    tenant_id: str
    agent_id: str
    call_id: str
    account_sid: str
    from_number: str
    to_number: str


_GRANT_DECODER = msgspec.json.Decoder(StreamGrant)

_PROVIDER_STATUS: dict[str, CallRecordStatus] = {
    "completed": "completed",
    "failed": "failed",
    "busy": "busy",
    "no-answer": "no_answer",
    "canceled": "canceled",
}


def _token_key(token: str) -> str:
    # Only a hash is stored: a Redis dump does not hand out live call tokens.
    return keyspace.system_key("calltoken", hashlib.sha256(token.encode()).hexdigest())


async def issue_stream_token(
    services: Services, token: str, grant: StreamGrant, ttl: int = TOKEN_TTL
) -> None:
    """Make ``token`` redeemable once, for ``ttl`` seconds, by the media socket as ``grant``.

    For calls placed through the REST API, whose TwiML carries the token.
    """
    async with services.store.guard():
        await services.store.redis.set(_token_key(token), msgspec.json.encode(grant), ex=ttl)


def _twiml_key(tenant_id: str, call_sid: str) -> str:
    return keyspace.tenant_key(tenant_id, "twiml", call_sid)


def _twiml(body: str) -> web.Response:
    return web.Response(
        text='<?xml version="1.0" encoding="UTF-8"?><Response>' + body + "</Response>",
        content_type="text/xml",
    )


def _say_hangup(text: str) -> str:
    return f"<Say>{escape(text)}</Say><Hangup/>"


def fallback_twiml(fallback_number: str | None) -> str:
    """What Twilio runs when the stream cannot serve the caller."""
    if fallback_number:
        return f"<Dial>{escape(fallback_number)}</Dial>"
    return _say_hangup(APOLOGY)


# Endings after which the caller is done: anything else means the stream
# failed and the caller should hear the fallback instead of dead air.
_NORMAL_ENDINGS = frozenset(
    {EndReason.CALLER_HANGUP.value, EndReason.AGENT_HANGUP.value, EndReason.TRANSFER.value}
)


def public_base(config: Config, request: web.Request) -> str:
    """The base URL Twilio uses for us: ``--public-url``, else what the request says."""
    if config.public_url:
        return config.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def stream_url(config: Config, request: web.Request) -> str:
    base = public_base(config, request)
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{MEDIA_PATH}"


def signed_url(config: Config, request: web.Request) -> str:
    """The URL as Twilio called it (behind a proxy: the public one, not the socket's)."""
    return public_base(config, request) + str(request.rel_url)


class _Tenancy(msgspec.Struct, kw_only=True):
    tenant_id: str
    agent_id: str
    account_sid: str
    fallback_number: str | None


def _runtime(call: Call[Any]) -> CallRuntime:
    return call.request.app[CALLS]


def _services(call: Call[Any]) -> Services:
    return call.request.app[SERVICES]


async def _verify(call: Call[Any], account_sid: str, to: str) -> _Tenancy | None:
    """Tenant of the called number with a valid signature; None for an unknown
    number; ApiError 403 when the request is not Twilio's for that tenant."""
    services = _services(call)
    runtime = _runtime(call)
    found = await services.numbers.lookup(to)
    if found is None or found[1].provider != "twilio":
        return None
    tenant_id, number = found
    secret = await services.secrets.get(tenant_id, "twilio")
    reason = ""
    auth_token = ""
    if secret is None:
        reason = "no_secret"
    else:
        auth_token = str(secret.get("auth_token", ""))
        expected_sid = str(secret.get("account_sid", ""))
        if not auth_token:
            reason = "no_secret"
        elif not secrets.compare_digest(account_sid.encode(), expected_sid.encode()):
            reason = "account"
    if not reason:
        form = await call.request.post()
        pairs = [(k, v) for k, v in form.items() if isinstance(v, str)]
        url = signed_url(call.request.app[CONFIG], call.request)
        signature = call.request.headers.get("X-Twilio-Signature")
        if not validate_signature(auth_token, url, pairs, signature):
            reason = "signature"
    if reason:
        runtime.metrics.signature_failures.labels(reason).inc()
        log.warning("twilio request refused (%s) for tenant %s", reason, tenant_id)
        raise ApiError(403, "forbidden", "invalid Twilio signature")
    fallback = secret.get("fallback_number") if secret is not None else None
    return _Tenancy(
        tenant_id=tenant_id,
        agent_id=number.agent_id,
        account_sid=account_sid,
        fallback_number=str(fallback) if fallback else None,
    )


async def _answer_webhook(call: Call[TwilioVoiceWebhook]) -> web.Response:
    body = call.body
    tenancy = await _verify(call, body.AccountSid, body.To)
    if tenancy is None:
        return _twiml(_say_hangup(UNKNOWN_NUMBER))
    if not _CALL_ID.match(body.CallSid):
        raise ApiError(400, "bad_request", "missing or malformed CallSid")
    services = _services(call)
    runtime = _runtime(call)
    config = call.request.app[CONFIG]
    tenant_id = tenancy.tenant_id
    redis = services.store.redis
    cache_key = _twiml_key(tenant_id, body.CallSid)
    async with services.store.guard():
        cached = await redis.get(cache_key)
    if cached is not None:
        return _twiml(to_bytes(cached).decode())

    tenant = await services.registry.get(tenant_id)
    now = time.time()
    record = CallRecord(
        id=body.CallSid,
        tenant_id=tenant_id,
        agent_id=tenancy.agent_id,
        provider="twilio",
        from_number=body.from_,
        to_number=body.To,
        status="ringing",
        created_at=now,
    )
    fallback = fallback_twiml(tenancy.fallback_number)
    token: str | None = None
    if tenant.status != "active":
        answer = fallback
        record.status, record.end_reason, record.ended_at = "failed", "suspended", now
    elif services.status.draining or runtime.control.draining:
        runtime.control.start_drain()
        runtime.metrics.rejected.labels(tenant_id, Admission.DRAINING.value).inc()
        answer = fallback
        record.status, record.end_reason, record.ended_at = "failed", "drain", now
    else:
        admission = runtime.control.admit(
            tenant_id, tenancy.agent_id, "twilio", body.CallSid, tenant.quotas
        )
        if admission is Admission.ADMITTED:
            token = secrets.token_urlsafe(24)
            action = public_base(config, call.request) + CONNECT_ACTION_PATH
            answer = (
                f"<Connect action={quoteattr(action)}>"
                f"<Stream url={quoteattr(stream_url(config, call.request))}>"
                f'<Parameter name="token" value={quoteattr(token)}/>'
                "</Stream></Connect>" + fallback
            )
        else:
            answer = '<Reject reason="busy"/>'
            record.status, record.end_reason, record.ended_at = "busy", admission.value, now
    async with services.store.guard():
        if token is not None:
            grant = StreamGrant(
                tenant_id=tenant_id,
                agent_id=tenancy.agent_id,
                call_id=body.CallSid,
                account_sid=tenancy.account_sid,
                from_number=body.from_,
                to_number=body.To,
            )
            await redis.set(_token_key(token), msgspec.json.encode(grant), ex=TOKEN_TTL)
        stored = await redis.set(cache_key, answer, nx=True, ex=TWIML_TTL)
        if not stored:
            # A concurrent retry answered first: give the same answer it gave.
            if token is not None:
                await redis.unlink(_token_key(token))
            winner = await redis.get(cache_key)
            if winner is not None:
                return _twiml(to_bytes(winner).decode())
    await runtime.records.create(record)
    return _twiml(answer)


async def _status_callback(call: Call[TwilioStatusCallback]) -> None:
    body = call.body
    tenancy = await _verify(call, body.AccountSid, body.To)
    if tenancy is None:
        return
    if not _CALL_ID.match(body.CallSid):
        return
    runtime = _runtime(call)
    changes: dict[str, Any] = {"provider_status": body.CallStatus[:32]}
    with contextlib.suppress(ValueError):
        changes["provider_duration"] = float(body.CallDuration)
    final = _PROVIDER_STATUS.get(body.CallStatus)
    live = runtime.control.get(body.CallSid)
    try:
        record = await runtime.records.get(tenancy.tenant_id, body.CallSid)
    except NotFound:
        return
    if final is not None and (live is None or live.call is None):
        # The media side has the better view of a call it served; the
        # provider's word decides only for calls that never got that far.
        if record.status in ("ringing", "in_progress") or record.status == final:
            changes["status"] = final
        if record.ended_at is None:
            changes["ended_at"] = time.time()
        if final != "completed" and record.end_reason is None:
            changes["end_reason"] = final
        runtime.control.release(body.CallSid)  # an admission whose media never came
    await runtime.records.update(tenancy.tenant_id, body.CallSid, **changes)
    await runtime.records.append_event(
        tenancy.tenant_id, body.CallSid, "provider_status", body.CallStatus[:32]
    )


async def _ending_of(runtime: CallRuntime, tenant_id: str, call_sid: str) -> str | None:
    """How the call's stream ended (an ``EndReason`` value), None if unknown."""
    live = runtime.control.get(call_sid)
    if live is not None and live.tenant_id == tenant_id and live.call is not None:
        # The media side may still be writing the record; its live call knows.
        reason = live.call.end_reason
        return None if reason is None else reason.value
    try:
        record = await runtime.records.get(tenant_id, call_sid)
    except (NotFound, StoreUnavailable):
        return None
    return record.end_reason


async def _connect_action(call: Call[TwilioConnectAction]) -> web.Response:
    body = call.body
    tenancy = await _verify(call, body.AccountSid, body.To)
    if tenancy is None:
        return _twiml(_say_hangup(UNKNOWN_NUMBER))
    if not _CALL_ID.match(body.CallSid):
        raise ApiError(400, "bad_request", "missing or malformed CallSid")
    runtime = _runtime(call)
    ending = await _ending_of(runtime, tenancy.tenant_id, body.CallSid)
    normal = ending in _NORMAL_ENDINGS
    outcome = "hangup" if normal else "fallback"
    detail = f"{outcome} ({ending or 'stream failed'})"
    try:
        await runtime.records.append_event(
            tenancy.tenant_id, body.CallSid, "connect_action", detail
        )
    except (NotFound, StoreUnavailable):
        log.warning("call %s: connect action %s not recorded", body.CallSid, detail)
    log.info("call %s: connect action answered %s", body.CallSid, detail)
    if normal:
        return _twiml("<Hangup/>")
    return _twiml(fallback_twiml(tenancy.fallback_number))


async def _redeem(services: Services, token: str) -> StreamGrant | None:
    if not token or len(token) > 128:
        return None
    async with services.store.guard():
        raw = await services.store.redis.getdel(_token_key(token))
    if raw is None:
        return None
    try:
        return _GRANT_DECODER.decode(to_bytes(raw))
    except msgspec.DecodeError:
        return None


_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class MediaSession:
    """One Media Streams socket from open to close; its call's ``CallTransport``."""

    def __init__(
        self,
        runtime: CallRuntime,
        services: Services,
        config: Config,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.runtime = runtime
        self.services = services
        self.config = config
        self.ws = ws
        # The socket's transport, for synchronous media writes; None falls back
        # to aiohttp's (coroutine) writer.
        self.transport = transport
        self.state = TwilioStreamState()
        self.binary_frames = 0
        self._stall: asyncio.TimerHandle | None = None
        self._channel: TwilioMediaChannel | None = None
        self._rest: list[StreamEvent] = []  # events after ``start``, for the channel

    def _send_now(self, data: bytes) -> None:
        """Write one text frame (UTF-8 bytes) to the socket now (the clock's media path)."""
        transport = self.transport
        if transport is None or self.ws.closed or transport.is_closing():
            raise ConnectionResetError("media socket closed")
        if transport.get_write_buffer_size() > MAX_WRITE_BACKLOG:
            raise ConnectionError("media socket peer is not reading")
        size = len(data)
        if size < 126:
            header = bytes((_WS_TEXT, size))
        elif size < 65536:
            header = _WS_LEN16.pack(_WS_TEXT, 126, size)
        else:
            header = _WS_LEN64.pack(_WS_TEXT, 127, size)
        transport.write(header + data)

    # -- stall filling -----------------------------------------------------
    def _arm_stall(self) -> None:
        due = self.state.next_timeout()
        if due is not None:
            self._stall = asyncio.get_running_loop().call_at(due, self._on_stall)

    def _on_stall(self) -> None:
        # Armed once, not per message: media that arrived since only moved the
        # due time, so a timer that fires early re-arms for the new time.
        self._stall = None
        channel = self._channel
        if channel is None or channel.closed:
            return
        now = asyncio.get_running_loop().time()
        due = self.state.next_timeout()
        if due is None:
            return
        if due <= now:
            channel.handle(self.state.poll(now), now)
        self._arm_stall()

    def _disarm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _ws_error(self, kind: str, count: int = 1) -> None:
        if count:
            self.runtime.metrics.ws_errors.labels(kind).inc(count)

    async def _await_start(self) -> tuple[StreamStarted, list[StreamEvent]] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._ws_error("start_timeout")
                await self.ws.close(code=1008, message=b"no start message")
                return None
            try:
                message = await self.ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            if message.type is WSMsgType.TEXT:
                events = self.state.feed(message.data, loop.time())
                for index, event in enumerate(events):
                    if isinstance(event, StreamStarted):
                        return event, events[index + 1 :]
            elif message.type is WSMsgType.BINARY:
                self.binary_frames += 1
            elif message.type in _CLOSED:
                return None

    async def run(self) -> None:
        started = await self._await_start()
        if started is None:
            self._count_stream_errors()
            return
        start, rest = started
        grant = await _redeem(self.services, start.custom_parameters.get("token", ""))
        if grant is None or (start.call_sid and start.call_sid != grant.call_id):
            self._ws_error("bad_token")
            self._count_stream_errors()
            await self.ws.close(code=1008, message=b"invalid or expired call token")
            return
        await self._serve(grant, rest)

    async def _agent_for(self, grant: StreamGrant, media_call: MediaCall) -> CallAgent:
        try:
            agent = await self.services.agents.get(grant.tenant_id, grant.agent_id)
        except NotFound:
            return FallbackAgent("agent no longer exists")
        return self.runtime.agents.create(agent, media_call)

    async def _serve(self, grant: StreamGrant, rest: list[StreamEvent]) -> None:
        loop = asyncio.get_running_loop()
        runtime = self.runtime
        wall = time.time()
        media_call = MediaCall(
            grant.call_id,
            tenant_id=grant.tenant_id,
            agent_id=grant.agent_id,
            provider="twilio",
            from_number=grant.from_number,
            to_number=grant.to_number,
            now=wall,
        )
        media_call.answer(wall)
        recording = open_recording(runtime.writer, self.config.data_dir, media_call, loop.time())
        recorder = recording.recorder if recording is not None else None
        channel: TwilioMediaChannel
        if self.transport is not None:
            channel = DirectTwilioMediaChannel(
                media_call,
                runtime.clock,
                self.state,
                self.ws.send_str,
                self._close,
                self._send_now,
                recorder=recorder,
            )
        else:
            channel = TwilioMediaChannel(
                media_call,
                runtime.clock,
                self.state,
                self.ws.send_str,
                self._close,
                recorder=recorder,
            )
        self._channel = channel
        self._rest = rest
        lifecycle = CallLifecycle(runtime, agent_stop_timeout=AGENT_STOP_TIMEOUT)
        await lifecycle.run(channel, self._agent_for(grant, media_call), self, recording=recording)

    async def _close(self) -> None:
        await self.ws.close()

    # -- CallTransport -----------------------------------------------------
    async def serve(self) -> None:
        """Carry the call: the events that came with ``start``, then the socket's."""
        channel = self._channel
        assert channel is not None  # set by _serve before the lifecycle runs
        loop = asyncio.get_running_loop()
        channel.handle(self._rest, loop.time())
        self._arm_stall()
        try:
            await self._pump(channel)
        finally:
            self._disarm_stall()

    def abort(self) -> None:
        """The call stops with its channel open: the caller left if the socket did."""
        channel = self._channel
        if channel is not None:
            channel.deliver_closed(EndReason.CALLER_HANGUP if self.ws.closed else EndReason.ERROR)

    async def close(self) -> list[CallEvent]:
        """Close the socket; count its stream errors; the silence filled, as an event."""
        if not self.ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(AGENT_STOP_TIMEOUT):
                    await self.ws.close()
        self._count_stream_errors()
        gap_frames = self.state.counters.gap_frames
        if not gap_frames:
            return []
        return [CallEvent(time.time(), "gap_fill", f"{gap_frames} frames")]

    async def _pump(self, channel: TwilioMediaChannel) -> None:
        """Feed socket messages to the stream state until the call ends."""
        loop = asyncio.get_running_loop()
        state = self.state
        ws = self.ws
        while not channel.closed:
            message = await ws.receive()
            kind = message.type
            if kind is WSMsgType.TEXT:
                now = loop.time()
                channel.handle(state.feed(message.data, now), now)
                if self._stall is None and not channel.closed:
                    self._arm_stall()  # the first media sets the stream's clock
            elif kind is WSMsgType.BINARY:
                self.binary_frames += 1  # Twilio sends JSON text only; skip it
            elif kind in _CLOSED:
                return

    def _count_stream_errors(self) -> None:
        counters = self.state.counters
        for kind in (
            "malformed",
            "unknown_events",
            "out_of_order",
            "duplicates",
            "foreign_stream",
            "late_frames",
        ):
            self._ws_error(kind, getattr(counters, kind))
        self._ws_error("binary", self.binary_frames)


def register(table: RouteTable) -> None:
    """Declare the Twilio routes on ``table``."""
    tags = ("twilio",)

    @table.route(
        "POST", WEBHOOK_PATH, auth=Auth.PUBLIC, body=TwilioVoiceWebhook,
        body_kind=BodyKind.FORM, response_media="text/xml", tags=tags, errors=(403,),
        summary="Twilio voice webhook (X-Twilio-Signature): TwiML <Connect><Stream>",
    )  # fmt: skip
    async def twilio_webhook(call: Call[TwilioVoiceWebhook]) -> web.StreamResponse:
        return await _answer_webhook(call)

    @table.route(
        "POST", STATUS_PATH, auth=Auth.PUBLIC, body=TwilioStatusCallback,
        body_kind=BodyKind.FORM, status=204, tags=tags, errors=(403,),
        summary="Twilio call status callback (signed): updates the call record",
    )  # fmt: skip
    async def twilio_status(call: Call[TwilioStatusCallback]) -> None:
        await _status_callback(call)

    @table.route(
        "POST", CONNECT_ACTION_PATH, auth=Auth.PUBLIC, body=TwilioConnectAction,
        body_kind=BodyKind.FORM, response_media="text/xml", tags=tags, errors=(400, 403),
        summary="Twilio <Connect action> (signed): <Hangup/> after a normal ending, "
        "else the fallback TwiML",
    )  # fmt: skip
    async def twilio_connect_action(call: Call[TwilioConnectAction]) -> web.StreamResponse:
        return await _connect_action(call)

    @table.route(
        "GET", MEDIA_PATH, auth=Auth.PUBLIC, websocket=True, tags=tags,
        summary="WebSocket: Twilio Media Streams (call token in the start message)",
    )  # fmt: skip
    async def twilio_media(call: Call[None]) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_WS_MESSAGE, autoping=True, compress=False, heartbeat=None
        )
        if not ws.can_prepare(call.request).ok:
            raise ApiError(400, "bad_request", "expected a WebSocket upgrade")
        await ws.prepare(call.request)
        session = MediaSession(
            _runtime(call), _services(call), call.request.app[CONFIG], ws, call.request.transport
        )
        await session.run()
        return ws
