"""Typed keys for what the application object carries (no module-level state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from voxgate.server.config import Config
from voxgate.server.metrics import HttpMetrics
from voxgate.server.openapi import OpenApiDocument
from voxgate.server.routing import Route

if TYPE_CHECKING:  # imported for typing only: the app's plumbing must not need the store
    from voxgate.server.services import Services

CONFIG = web.AppKey("voxgate.config", Config)
SERVICES: web.AppKey[Services] = web.AppKey("voxgate.services")
METRICS = web.AppKey("voxgate.metrics", HttpMetrics)
ROUTES = web.AppKey("voxgate.routes", dict[str, Route])
OPENAPI = web.AppKey("voxgate.openapi", OpenApiDocument)


class OpenSockets:
    """Open WebSockets, closed on shutdown so a drain is not held up by idle viewers."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()


SOCKETS = web.AppKey("voxgate.sockets", OpenSockets)
