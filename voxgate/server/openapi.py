"""OpenAPI 3.1 document generated from the route table and the msgspec types it names.

Nothing here is written by hand per route: paths come from :class:`Route`
declarations, schemas from :func:`msgspec.json.schema_components`, so the document
covers every route the app serves and cannot disagree with what handlers decode.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec

from voxgate.server.errors import ErrorBody
from voxgate.server.routing import Auth, Route, RouteTable

_REF = "#/components/schemas/{name}"


_ERROR_TEXT = {
    400: "Malformed request",
    401: "Missing or invalid credentials",
    403: "Credentials valid but not allowed here",
    404: "Not found (also for another tenant's resources)",
    409: "Conflict or quota exceeded",
    413: "Request body too large",
    422: "Validation failed; `error.path` names the field",
    503: "Store unavailable",
}

_AUTH_ERRORS = {Auth.PUBLIC: (), Auth.ADMIN: (401, 403), Auth.TENANT: (401, 404)}


def _security(auth: Auth) -> list[dict[str, list[str]]]:
    if auth is Auth.PUBLIC:
        return []
    if auth is Auth.ADMIN:
        return [{"adminToken": []}]
    return [{"tenantKey": []}, {"adminToken": []}]


_PATTERN = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*):[^}]*\}")


def openapi_path(path: str) -> str:
    """An aiohttp path template as OpenAPI writes it: ``/a/{p:.*}`` -> ``/a/{p}``."""
    return _PATTERN.sub(r"{\1}", path)


def build_openapi(table: RouteTable, *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every route in ``table``."""
    types: list[Any] = [ErrorBody]
    for spec in table:
        if spec.body is not None:
            types.append(spec.body)
        if spec.response is not None:
            types.append(spec.response)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(types):
        schema_of.setdefault(id(item), schemas[position])
    error_schema = schema_of[id(ErrorBody)]

    paths: dict[str, dict[str, Any]] = {}
    for spec in table:
        operation = _operation(spec, schema_of, error_schema)
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Super-admin token (VOXGATE_ADMIN_TOKEN or generated)",
                },
                "tenantKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Tenant API key `vg_<tenant-prefix>_<random>`",
                },
            },
        },
    }


def _operation(
    spec: Route, schema_of: dict[int, dict[str, Any]], error_schema: dict[str, Any]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": spec.operation_id,
        "summary": spec.summary,
        "security": _security(spec.auth),
        "x-voxgate-auth": spec.auth.value,
    }
    if spec.tags:
        operation["tags"] = list(spec.tags)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in spec.path_params
    ]
    parameters.extend(
        {
            "name": query.name,
            "in": "query",
            "required": False,
            "schema": query.schema,
            "description": query.description,
        }
        for query in spec.query
    )
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = {
            "required": not spec.body_optional,
            "content": {spec.body_kind.value: {"schema": schema_of[id(spec.body)]}},
        }

    responses: dict[str, Any] = {}
    if spec.websocket:
        operation["x-websocket"] = True
        responses["101"] = {"description": "Switching protocols to a WebSocket"}
    elif spec.response is not None:
        responses[str(spec.status)] = {
            "description": spec.summary,
            "content": {spec.response_media: {"schema": schema_of[id(spec.response)]}},
        }
    elif spec.response_media != "application/json":
        responses[str(spec.status)] = {
            "description": spec.summary,
            "content": {spec.response_media: {"schema": {"type": "string"}}},
        }
    else:
        status = spec.status if spec.status != 200 else 204
        responses[str(status)] = {"description": spec.summary}

    codes = set(spec.errors) | set(_AUTH_ERRORS[spec.auth])
    if spec.body is not None:
        codes |= {413, 422}
        if spec.body_kind.value == "application/json":
            codes.add(400)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": error_schema}},
        }
    operation["responses"] = responses
    return operation


class OpenApiDocument:
    """The app's document, built once on first request, off the event loop."""

    def __init__(self, table: RouteTable, *, title: str, version: str) -> None:
        self._table = table
        self._title = title
        self._version = version
        self._document: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        if self._document is None:
            async with self._lock:
                if self._document is None:
                    self._document = await asyncio.to_thread(
                        build_openapi, self._table, title=self._title, version=self._version
                    )
        return self._document
