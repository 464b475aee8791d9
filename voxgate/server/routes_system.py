"""Super-admin routes under ``/system``: tenants, status and the live metrics feed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from voxgate.admin.status import SystemStatusView
from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, QueryParam, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import METRICS, SERVICES, SOCKETS
from voxgate.tenants.models import Tenant, TenantCreate, TenantCreated, TenantUpdate

# Bounds for the metrics feed's period, so one viewer can neither flood us nor idle forever.
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0
# A viewer that does not read for this long is dropped instead of buffering without end.
SEND_TIMEOUT = 5.0


class TenantList(msgspec.Struct, kw_only=True):
    tenants: list[Tenant]


class HttpRates(msgspec.Struct, kw_only=True):
    requests_total: int
    requests_per_second: float


class SystemMetricsEvent(msgspec.Struct, kw_only=True, tag="system_metrics", tag_field="type"):
    """One sample of the live system metrics feed."""

    at: float
    tenants: int
    active_calls: int
    workers: int
    draining: bool
    http: HttpRates


def _services(call: Call[Any]) -> Services:
    return call.request.app[SERVICES]


def register(table: RouteTable) -> None:
    """Declare the ``/system`` routes on ``table``."""
    tags = ("system",)

    @table.route(
        "POST", "/system/tenants", auth=Auth.ADMIN, body=TenantCreate, response=TenantCreated,
        status=201, tags=tags, summary="Create a tenant and its first API key (shown once)",
    )  # fmt: skip
    async def create_tenant(call: Call[TenantCreate]) -> TenantCreated:
        return await _services(call).registry.create(call.body, call.actor)

    @table.route(
        "GET", "/system/tenants", auth=Auth.ADMIN, response=TenantList, tags=tags,
        summary="List tenants",
    )  # fmt: skip
    async def list_tenants(call: Call[None]) -> TenantList:
        return TenantList(tenants=await _services(call).registry.list())

    @table.route(
        "GET", "/system/tenants/{tenant_id}", auth=Auth.ADMIN, response=Tenant, tags=tags,
        errors=(404,), summary="One tenant",
    )  # fmt: skip
    async def get_tenant(call: Call[None]) -> Tenant:
        return await _services(call).registry.get(call.tenant_id)

    @table.route(
        "PATCH", "/system/tenants/{tenant_id}", auth=Auth.ADMIN, body=TenantUpdate,
        response=Tenant, tags=tags, errors=(404,), summary="Rename a tenant or change quotas",
    )  # fmt: skip
    async def update_tenant(call: Call[TenantUpdate]) -> Tenant:
        return await _services(call).registry.update(call.tenant_id, call.body, call.actor)

    @table.route(
        "DELETE", "/system/tenants/{tenant_id}", auth=Auth.ADMIN, status=204, tags=tags,
        errors=(404,), summary="Delete a tenant and every key it owns",
    )  # fmt: skip
    async def delete_tenant(call: Call[None]) -> None:
        await _services(call).registry.delete(call.tenant_id, call.actor)

    @table.route(
        "POST", "/system/tenants/{tenant_id}/suspend", auth=Auth.ADMIN, response=Tenant,
        tags=tags, errors=(404,), summary="Suspend a tenant (its keys stop working at once)",
    )  # fmt: skip
    async def suspend_tenant(call: Call[None]) -> Tenant:
        return await _services(call).registry.suspend(call.tenant_id, call.actor)

    @table.route(
        "POST", "/system/tenants/{tenant_id}/resume", auth=Auth.ADMIN, response=Tenant,
        tags=tags, errors=(404,), summary="Resume a suspended tenant",
    )  # fmt: skip
    async def resume_tenant(call: Call[None]) -> Tenant:
        return await _services(call).registry.resume(call.tenant_id, call.actor)

    @table.route(
        "GET", "/system/status", auth=Auth.ADMIN, response=SystemStatusView, tags=tags,
        summary="Tenants with quotas and live counters, workers, calls, limits",
    )  # fmt: skip
    async def system_status(call: Call[None]) -> SystemStatusView:
        return await _services(call).status.collect()

    @table.route(
        "GET", "/system/metrics/ws", auth=Auth.ADMIN, websocket=True, tags=tags,
        summary="WebSocket: periodic `system_metrics` JSON events (?interval=seconds)",
        query=(
            QueryParam(
                "interval",
                {"type": "number", "minimum": MIN_INTERVAL, "maximum": MAX_INTERVAL},
                "Seconds between events (default 1)",
            ),
        ),
    )  # fmt: skip
    async def system_metrics_ws(call: Call[None]) -> web.StreamResponse:
        interval = _interval(call.request.query.get("interval", "1"))
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(call.request)
        call.request.app[SOCKETS].sockets.add(ws)
        try:
            await _feed(call, ws, interval)
        finally:
            call.request.app[SOCKETS].sockets.discard(ws)
            await ws.close()
        return ws


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ApiError(422, "invalid", "interval must be a number", "interval") from None
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ApiError(
            422, "invalid", f"interval must be {MIN_INTERVAL}..{MAX_INTERVAL}", "interval"
        )
    return value


async def _feed(call: Call[None], ws: web.WebSocketResponse, interval: float) -> None:
    """Send a sample every ``interval`` until the viewer leaves or the server stops.

    Waiting on ``ws.receive()`` with a timeout both paces the feed and notices a
    close from the viewer right away.
    """
    services = _services(call)
    metrics = call.request.app[METRICS]
    last_total, last_at = metrics.total, time.monotonic()
    while not ws.closed:
        now = time.monotonic()
        total = metrics.total
        rate = (total - last_total) / (now - last_at) if now > last_at else 0.0
        last_total, last_at = total, now
        tenants = await services.registry.list()
        event = SystemMetricsEvent(
            at=time.time(),
            tenants=len(tenants),
            active_calls=len(await services.status.calls()),
            workers=len(await services.status.workers()),
            draining=services.status.draining,
            http=HttpRates(requests_total=total, requests_per_second=round(rate, 3)),
        )
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.send_str(msgspec.json.encode(event).decode())
        except (TimeoutError, ConnectionResetError):
            return
        # Messages from the viewer are ignored but must not speed the feed up.
        deadline = asyncio.get_running_loop().time() + interval
        while not ws.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    message = await ws.receive()
                    if message.type in _GONE:
                        return
                    continue
            break


_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
