"""The HTTP error shape and the one mapping from exceptions to it.

Every error leaves as ``{"error": {"code", "message"}}`` (plus ``path`` for
validation errors).  Control-plane errors keep their own ``code``; anything
unexpected becomes a 500 whose details go to the log, not to the client.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from voxgate.tenants.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
    TenantsError,
)


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What went wrong, machine-readable ``code`` first."""

    code: str
    message: str
    # JSON path of the offending field for validation errors, e.g. ``$.quotas.max_cps``.
    path: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error response: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class ApiError(Exception):
    """An error a handler or middleware wants the client to see as-is."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}

_TENANT_STATUS: tuple[tuple[type[TenantsError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (QuotaExceeded, 409),
    (InvalidInput, 422),
    (StoreUnavailable, 503),
)


def api_error_of(exc: BaseException) -> ApiError | None:
    """The client-facing error for ``exc``, or ``None`` when it is a server fault (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidInput):
        return ApiError(422, "invalid", exc.message, exc.path)
    if isinstance(exc, TenantsError):
        for kind, status in _TENANT_STATUS:
            if isinstance(exc, kind):
                return ApiError(status, exc.code, exc.message)
        return None  # e.g. CryptoError: our fault, not the client's
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        code = _HTTP_CODES.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason)
    return None


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=error.code, message=error.message, path=error.path))
    return web.Response(
        status=error.status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=headers,
    )


INTERNAL = ApiError(500, "internal", "internal server error")
