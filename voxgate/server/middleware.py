"""Request pipeline: request id → access log + metrics → errors → size limit → auth.

Order matters: the access log and metrics sit outside error mapping so they see
the status the client really got; auth sits innermost so it runs only for
matched routes and can read the route's declared :class:`Auth` level.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from voxgate.server.errors import INTERNAL, ApiError, api_error_of, error_response
from voxgate.server.routing import PRINCIPAL_KEY, Auth, Principal, Route
from voxgate.server.state import METRICS, ROUTES, SERVICES
from voxgate.tenants.errors import NotFound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_KEY = web.RequestKey("voxgate.request_id", str)
REQUEST_ID_HEADER = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNMATCHED = "<unmatched>"

access_log = logging.getLogger("voxgate.access")
error_log = logging.getLogger("voxgate.server")


def route_of(request: web.Request) -> Route | None:
    """The declared route ``request`` matched, if any."""
    name = request.match_info.route.name
    return request.app[ROUTES].get(name) if name is not None else None


def route_label(request: web.Request) -> str:
    """Route template for logs and metrics; unmatched paths share one label."""
    spec = route_of(request)
    return spec.path if spec is not None else _UNMATCHED


def request_id_of(request: web.Request) -> str:
    found = request.get(REQUEST_ID_KEY)
    return found if isinstance(found, str) else "-"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Adopt a well-formed incoming ``X-Request-Id`` or mint one; echo it back."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON line per request on ``voxgate.access``; never headers, query or bodies."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = route_label(request)
        request.app[METRICS].observe(route, request.method, status, elapsed)
        access_log.info(
            json.dumps(
                {
                    "method": request.method,
                    # The path may carry ids but never credentials: tokens go in headers,
                    # and the query string (where a WS token may sit) is not logged.
                    "path": request.path,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "request_id": request_id_of(request),
                },
                separators=(",", ":"),
            )
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every exception to the JSON error shape; log the ones that are our fault."""
    try:
        return await handler(request)
    except Exception as exc:
        error = api_error_of(exc)
        if error is None:
            error_log.exception(
                "unhandled error in %s %s (request %s)",
                request.method,
                route_label(request),
                request_id_of(request),
            )
            error = INTERNAL
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers = {"Allow": ", ".join(sorted(exc.allowed_methods))}
        return error_response(error, headers)


def body_limit_middleware(max_bytes: int) -> Middleware:
    """Refuse declared-too-large bodies before reading them (chunked ones hit
    aiohttp's ``client_max_size`` while reading, which maps to the same 413)."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise ApiError(413, "too_large", f"request body exceeds {max_bytes} bytes")
        return await handler(request)

    return limit


def _bearer(request: web.Request, spec: Route) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if spec.websocket:
        # Browsers cannot set headers on a WebSocket handshake.
        query_token = request.query.get("access_token", "")
        if query_token:
            return query_token
    return None


_UNAUTHORIZED = ApiError(401, "unauthorized", "missing or invalid bearer token")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place that decides who may call what (see :class:`Auth`)."""
    spec = route_of(request)
    if spec is None or spec.auth is Auth.PUBLIC:
        return await handler(request)
    token = _bearer(request, spec)
    if token is None:
        raise _UNAUTHORIZED
    services = request.app[SERVICES]
    key_tenant = await services.apikeys.authenticate(token)
    if key_tenant is not None:
        principal = Principal(kind="tenant", tenant_id=key_tenant, actor="apikey")
    elif await services.admin_tokens.verify(token):
        principal = Principal(kind="admin", actor="admin")
    else:
        raise _UNAUTHORIZED

    if spec.auth is Auth.ADMIN and principal.kind != "admin":
        raise ApiError(403, "forbidden", "this route needs the admin token")
    if spec.auth is Auth.TENANT:
        path_tenant = request.match_info.get("tenant_id")
        if principal.kind == "tenant":
            if path_tenant is not None and path_tenant != principal.tenant_id:
                # Same answer as for a tenant that does not exist: nothing to learn.
                raise NotFound("not found")
        elif path_tenant is not None:
            try:
                await services.registry.get(path_tenant)  # NotFound for unknown tenants
            except ValueError:  # not even a well-formed tenant id
                raise NotFound("not found") from None
            principal = Principal(kind="admin", tenant_id=path_tenant, actor="admin")
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


def middlewares(max_body_bytes: int) -> list[Middleware]:
    return [
        request_id_middleware,
        access_middleware,
        error_middleware,
        body_limit_middleware(max_body_bytes),
        auth_middleware,
    ]
