"""Public operational routes: health, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.state import METRICS, OPENAPI, SERVICES


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``ok`` when every dependency answers; ``degraded`` (HTTP 503) otherwise."""

    status: str
    redis: bool | None = None


def register(table: RouteTable) -> None:
    """Declare the public operational routes on ``table``."""
    tags = ("meta",)

    @table.route(
        "GET", "/healthz", auth=Auth.PUBLIC, response=Health, tags=tags, errors=(503,),
        summary="Liveness and dependency health",
    )  # fmt: skip
    async def healthz(call: Call[None]) -> web.StreamResponse | Health:
        if call.request.app[SERVICES].store.healthy:
            return Health(status="ok")
        return web.Response(
            status=503,
            body=msgspec.json.encode(Health(status="degraded", redis=False)),
            content_type="application/json",
        )

    @table.route(
        "GET", "/metrics", auth=Auth.PUBLIC, response_media="text/plain", tags=tags,
        summary="Prometheus metrics (text exposition format)",
    )  # fmt: skip
    async def metrics(call: Call[None]) -> web.StreamResponse:
        registry = call.request.app[METRICS]
        response = web.Response(body=registry.render())
        response.headers["Content-Type"] = registry.content_type
        return response

    @table.route(
        "GET", "/openapi.json", auth=Auth.PUBLIC, response=dict[str, Any], tags=tags,
        summary="This API as an OpenAPI 3.1 document",
    )  # fmt: skip
    async def openapi(call: Call[None]) -> dict[str, Any]:
        return await call.request.app[OPENAPI].get()
