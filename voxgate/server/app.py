"""Application wiring: the route table, middlewares and shared state of one aiohttp app."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import WSCloseCode, web

import voxgate
from voxgate.server import (
    console_signin,
    routes_analytics,
    routes_calls,
    routes_console,
    routes_meta,
    routes_preview,
    routes_sip,
    routes_system,
    routes_tenant,
    routes_trunks,
    routes_twilio,
    routes_webrtc,
)
from voxgate.server.call_control import install_calls
from voxgate.server.config import Config
from voxgate.server.metrics import HttpMetrics
from voxgate.server.middleware import middlewares
from voxgate.server.openapi import OpenApiDocument
from voxgate.server.routes_trunks import install_outbound
from voxgate.server.routing import RouteTable
from voxgate.server.services import Services
from voxgate.server.state import (
    CONFIG,
    METRICS,
    OPENAPI,
    ROUTES,
    SERVICES,
    SOCKETS,
    OpenSockets,
)
from voxgate.server.worker_agent import install_flow_agents

RouteRegistrar = Callable[[RouteTable], None]

# Registrars of the routes every app serves; later parts (Twilio, calls, trunks)
# append theirs via ``create_app(..., extra_routes=...)``.
CORE_ROUTES: tuple[RouteRegistrar, ...] = (
    routes_meta.register,
    routes_system.register,
    routes_tenant.register,
    routes_twilio.register,
    routes_calls.register,
    routes_trunks.register,
    routes_sip.register,
    routes_preview.register,
    routes_analytics.register,
    console_signin.register,
    routes_console.register,
    routes_webrtc.register,
)

DEFAULT_MAX_BODY = 1024 * 1024


def route_table(extra_routes: Sequence[RouteRegistrar] = ()) -> RouteTable:
    """Every route of the app, declared but not bound to any services."""
    table = RouteTable()
    for register in (*CORE_ROUTES, *extra_routes):
        register(table)
    return table


def create_app(
    config: Config,
    services: Services,
    *,
    extra_routes: Sequence[RouteRegistrar] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> web.Application:
    """The aiohttp application serving the HTTP contract on ``services``."""
    app = web.Application(
        middlewares=middlewares(max_body_bytes),
        client_max_size=max_body_bytes,
    )
    table = route_table(extra_routes)
    app[CONFIG] = config
    app[SERVICES] = services
    app[METRICS] = HttpMetrics()
    app[SOCKETS] = OpenSockets()
    table.install(app, ROUTES)
    app[OPENAPI] = OpenApiDocument(table, title="voxgate", version=voxgate.__version__)
    app.on_shutdown.append(_close_sockets)
    install_calls(app)
    routes_analytics.install_call_events(app)
    install_flow_agents(app)
    install_outbound(app)
    routes_webrtc.install_webrtc(app)
    return app


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SOCKETS].sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
