"""Tenant analytics live feed: WS ``/tenants/{tenant_id}/api/analytics/ws``.

Everything a tenant's calls publish on its Redis pub/sub channel
(``vg:{tenant}:events``) is relayed to the viewer as JSON text frames: turns
and call events from the speech-worker bridge, plus ``call_started`` /
``call_ended`` from the live call registry (:class:`CallEventPublisher`).
The channel is named by the path's tenant, which the auth middleware has
already matched to the caller's key, so a viewer only ever sees its own
tenant's calls.

Bounded everywhere: a capped number of viewers per tenant, call events queued
in a fixed-size queue (dropped and counted when Redis stalls), and a viewer
that does not read is dropped rather than buffered for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
from aiohttp import WSMsgType, web

from voxgate.server.call_control import CALLS, LiveCall
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import SERVICES, SOCKETS
from voxgate.server.worker_agent import events_channel

log = logging.getLogger("voxgate.analytics")

# Live viewers per tenant: each holds one Redis connection for its subscription.
MAX_VIEWERS_PER_TENANT = 8
# A viewer that does not take a frame for this long is dropped.
SEND_TIMEOUT = 5.0
# How often an idle feed looks at whether its viewer is still there.
POLL_SECONDS = 0.5
EVENT_QUEUE = 1024


class CallStarted(msgspec.Struct, kw_only=True, tag="call_started", tag_field="type"):
    call_id: str
    agent_id: str
    provider: str
    at: float


class CallEnded(msgspec.Struct, kw_only=True, tag="call_ended", tag_field="type"):
    call_id: str
    agent_id: str
    provider: str
    reason: str
    at: float


CallEvent = CallStarted | CallEnded


class CallEventPublisher:
    """Publishes call start/end of the live call registry to each tenant's channel.

    ``started``/``ended`` are called synchronously by the registry; one task
    writes to Redis so the registry (on the media loop) never waits for it.
    """

    def __init__(self, services: Services) -> None:
        self._services = services
        self._queue: asyncio.Queue[tuple[str, CallEvent] | None] = asyncio.Queue(EVENT_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def started(self, live: LiveCall) -> None:
        self._put(
            live.tenant_id,
            CallStarted(
                call_id=live.call_id,
                agent_id=live.agent_id,
                provider=live.provider,
                at=time.time(),
            ),
        )

    def ended(self, live: LiveCall) -> None:
        reason = live.call.end_reason if live.call is not None else None
        self._put(
            live.tenant_id,
            CallEnded(
                call_id=live.call_id,
                agent_id=live.agent_id,
                provider=live.provider,
                reason=reason.value if reason is not None else "not_connected",
                at=time.time(),
            ),
        )

    def _put(self, tenant_id: str, event: CallEvent) -> None:
        try:
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            self._queue.put_nowait((tenant_id, event))
        except (asyncio.QueueFull, RuntimeError):  # full, or no loop (sync tests)
            self.dropped += 1

    async def _drain(self) -> None:
        redis = self._services.store.redis
        while (item := await self._queue.get()) is not None:
            tenant_id, event = item
            try:
                await redis.publish(events_channel(tenant_id), msgspec.json.encode(event))
            except Exception as exc:  # a lost live event must never disturb calls
                log.warning("call event not published for tenant %s: %s", tenant_id, exc)

    async def close(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(1.0):
                await asyncio.shield(task)
        task.cancel()


class _Viewers:
    """Live feed viewers per tenant (for the cap)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}


VIEWERS = web.AppKey("voxgate.analytics_viewers", _Viewers)
PUBLISHER = web.AppKey("voxgate.call_event_publisher", CallEventPublisher)


def install_call_events(app: web.Application) -> CallEventPublisher:
    """Publish the app's call start/end events; needs :func:`install_calls` first."""
    publisher = CallEventPublisher(app[SERVICES])
    app[CALLS].control.observers.append(publisher)
    app[PUBLISHER] = publisher
    app[VIEWERS] = _Viewers()

    async def on_cleanup(_app: web.Application) -> None:
        await publisher.close()

    app.on_cleanup.append(on_cleanup)
    return publisher


def register(table: RouteTable) -> None:
    """Declare the analytics routes on ``table``."""

    @table.route(
        "GET", "/tenants/{tenant_id}/api/analytics/ws", auth=Auth.TENANT, websocket=True,
        tags=("analytics",), errors=(404, 429),
        summary="WebSocket: the tenant's live call events as JSON (`call_started`, "
        "`call_ended`, `turn`, `event`)",
    )  # fmt: skip
    async def analytics_ws(call: Call[None]) -> web.StreamResponse:
        services: Services = call.request.app[SERVICES]
        tenant_id = call.tenant_id
        await services.registry.get(tenant_id)  # 404 for a tenant that does not exist
        viewers = call.request.app[VIEWERS]
        if viewers.count.get(tenant_id, 0) >= MAX_VIEWERS_PER_TENANT:
            raise ApiError(429, "too_many_viewers", "too many live feeds open for this tenant")
        viewers.count[tenant_id] = viewers.count.get(tenant_id, 0) + 1
        try:
            return await _serve_feed(call.request, services, tenant_id)
        finally:
            left = viewers.count.get(tenant_id, 1) - 1
            if left > 0:
                viewers.count[tenant_id] = left
            else:
                viewers.count.pop(tenant_id, None)


async def _serve_feed(
    request: web.Request, services: Services, tenant_id: str
) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "bad_request", "expected a WebSocket upgrade")
    pubsub = services.store.redis.pubsub(ignore_subscribe_messages=True)
    try:
        async with services.store.guard():
            await pubsub.subscribe(events_channel(tenant_id))
    except BaseException:
        await pubsub.aclose()
        raise
    sockets = request.app[SOCKETS].sockets
    try:
        await ws.prepare(request)
        sockets.add(ws)
        # Messages from the viewer are ignored; reading them notices its close.
        reader = asyncio.get_running_loop().create_task(_read_until_closed(ws))
        try:
            while not ws.closed and not reader.done():
                message = await pubsub.get_message(timeout=POLL_SECONDS)
                if message is None or message.get("type") != "message":
                    continue
                data = message["data"]
                text = data.decode() if isinstance(data, bytes) else str(data)
                try:
                    async with asyncio.timeout(SEND_TIMEOUT):
                        await ws.send_str(text)
                except (TimeoutError, ConnectionResetError):
                    break
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    except Exception as exc:  # Redis gone mid-feed: end this feed, not the server
        if not ws.prepared:
            raise
        log.warning("analytics feed for tenant %s ended: %s", tenant_id, exc)
    finally:
        sockets.discard(ws)
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        if ws.prepared:
            await ws.close()
    return ws


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return
