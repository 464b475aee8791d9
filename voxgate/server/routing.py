"""The route table: every HTTP/WS route is declared once, with everything the app needs.

A :class:`Route` carries the method, path template, who may call it, the msgspec
types of its request and response bodies, the success status and a summary.  The
same declarations drive three things, so they cannot drift apart:

* aiohttp routing (:meth:`RouteTable.install`),
* the auth middleware (it reads :attr:`Route.auth` of the matched route),
* the generated OpenAPI document (:mod:`voxgate.server.openapi`).

Adding a route is one decorator::

    @table.route("GET", "/tenants/{tenant_id}/api/quotas", auth=Auth.TENANT,
                 response=Quotas, summary="The tenant's quotas")
    async def get_quotas(call: Call[None]) -> Quotas: ...

Handlers receive a :class:`Call` with the decoded body and the authenticated
principal, and return a msgspec-encodable value (encoded with the declared status)
or an aiohttp response they built themselves (WebSockets, TwiML, plain text).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec
from aiohttp import web

from voxgate.server.errors import ApiError

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

B = TypeVar("B")


class Auth(enum.Enum):
    """Who may call a route."""

    PUBLIC = "public"  # anyone (health, metrics, OpenAPI, provider webhooks with own checks)
    ADMIN = "admin"  # the super-admin bearer token only
    TENANT = "tenant"  # a key of the tenant named in the path, or the admin token


class BodyKind(enum.Enum):
    """How a request body is encoded on the wire."""

    JSON = "application/json"
    FORM = "application/x-www-form-urlencoded"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The authenticated caller of one request."""

    kind: Literal["anonymous", "admin", "tenant"]
    tenant_id: str | None = None
    # Stable label written to audit entries ("admin", "apikey"); never a secret.
    actor: str = "anonymous"


ANONYMOUS = Principal(kind="anonymous")


class BodyError(ApiError):
    """The request body could not be decoded or validated."""


@dataclass(frozen=True, slots=True)
class Call(Generic[B]):
    """One request as a handler sees it."""

    request: web.Request
    body: B
    principal: Principal

    def param(self, name: str) -> str:
        """A path parameter (always present for the route's own template)."""
        return self.request.match_info[name]

    @property
    def tenant_id(self) -> str:
        """The tenant this request acts on (tenant routes only)."""
        return self.request.match_info["tenant_id"]

    @property
    def actor(self) -> str:
        return self.principal.actor


Handler = Callable[[Call[Any]], Awaitable[Any]]

_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class Route:
    """Declaration of one route; see the module docstring."""

    method: HttpMethod
    path: str
    handler: Handler
    auth: Auth
    summary: str
    body: Any = None  # msgspec-decodable type, or None for no body
    body_kind: BodyKind = BodyKind.JSON
    body_optional: bool = False  # empty body decodes as ``body()`` (type must have defaults)
    response: Any = None  # msgspec-encodable type, or None for an empty response
    status: int = 200
    tags: tuple[str, ...] = ()
    websocket: bool = False
    # Media type of a response the handler builds itself (e.g. "text/plain").
    response_media: str = "application/json"
    errors: tuple[int, ...] = ()
    query: tuple[QueryParam, ...] = ()
    operation_id: str = ""

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)


@dataclass(frozen=True, slots=True)
class QueryParam:
    """A documented query-string parameter."""

    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass(slots=True)
class RouteTable:
    """All routes of one application, in declaration order."""

    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: HttpMethod,
        path: str,
        *,
        auth: Auth,
        summary: str,
        body: Any = None,
        body_kind: BodyKind = BodyKind.JSON,
        body_optional: bool = False,
        response: Any = None,
        status: int = 200,
        tags: tuple[str, ...] = (),
        websocket: bool = False,
        response_media: str = "application/json",
        errors: tuple[int, ...] = (),
        query: tuple[QueryParam, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Decorator declaring ``handler`` as the route ``method path``."""

        def register(handler: Handler) -> Handler:
            for existing in self.routes:
                if existing.method == method and existing.path == path:
                    raise ValueError(f"route {method} {path} declared twice")
            self.routes.append(
                Route(
                    method=method,
                    path=path,
                    handler=handler,
                    auth=auth,
                    summary=summary,
                    body=body,
                    body_kind=body_kind,
                    body_optional=body_optional,
                    response=response,
                    status=status,
                    tags=tags,
                    websocket=websocket,
                    response_media=response_media,
                    errors=errors,
                    query=query,
                    operation_id=handler.__name__,
                )
            )
            return handler

        return register

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def install(self, app: web.Application, routes_key: web.AppKey[dict[str, Route]]) -> None:
        """Add every route to ``app``; ``app[routes_key]`` maps aiohttp route names to routes."""
        index: dict[str, Route] = {}
        for number, spec in enumerate(self.routes):
            name = f"r{number}_{spec.operation_id}"
            app.router.add_route(spec.method, spec.path, _adapt(spec), name=name)
            index[name] = spec
        app[routes_key] = index


PRINCIPAL_KEY = web.RequestKey("voxgate.principal", Principal)


def principal_of(request: web.Request) -> Principal:
    """The principal the auth middleware attached to ``request``."""
    found = request.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else ANONYMOUS


def _adapt(spec: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await decode_body(request, spec) if spec.body is not None else None
        result = await spec.handler(
            Call(request=request, body=body, principal=principal_of(request))
        )
        if isinstance(result, web.StreamResponse):
            return result
        if spec.response is None and result is None:
            return web.Response(status=spec.status if spec.status != 200 else 204)
        return web.Response(
            status=spec.status,
            body=msgspec.json.encode(result),
            content_type="application/json",
        )

    handle.__name__ = spec.operation_id
    return handle


_AT = " - at `"


_MISSING = re.compile(r"^Object missing required field `([^`]+)`$")


def _split_msgspec_error(text: str) -> tuple[str, str]:
    """msgspec reports ``"<message> - at `$.a.b`"``; split it into message and path.

    A missing field is reported at its parent object; the path names the field.
    """
    message, path = text, "$"
    if text.endswith("`") and _AT in text:
        message, _, path = text.rpartition(_AT)
        path = path[:-1]
    if (missing := _MISSING.match(message)) is not None:
        path = f"{path}.{missing.group(1)}"
    return message, path


async def decode_body(request: web.Request, spec: Route) -> Any:
    """Decode and validate the request body into ``spec.body``; raise :class:`BodyError`."""
    if spec.body_kind is BodyKind.FORM:
        form = await request.post()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        try:
            return msgspec.convert(fields, spec.body, strict=False)
        except msgspec.ValidationError as exc:
            message, path = _split_msgspec_error(str(exc))
            raise BodyError(422, "invalid", message, path) from None
    raw = await request.read()
    if not raw.strip() and spec.body_optional:
        raw = b"{}"
    if not raw.strip():
        raise BodyError(422, "invalid", "a JSON request body is required", "$")
    try:
        return msgspec.json.decode(raw, type=spec.body)
    except msgspec.ValidationError as exc:
        message, path = _split_msgspec_error(str(exc))
        raise BodyError(422, "invalid", message, path) from None
    except msgspec.DecodeError as exc:
        message, _ = _split_msgspec_error(str(exc))
        raise BodyError(400, "malformed_json", message, "$") from None
