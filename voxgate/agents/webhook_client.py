"""Signed webhook calls from ``webhook`` flow nodes to a tenant's endpoint.

Each POST carries ``X-Voxgate-Signature: t=<unix time>,v1=<hex HMAC-SHA256>``
computed over ``"<t>." + body`` with the tenant's webhook secret, so the
receiver can check origin and freshness (see :func:`verify_signature`).
Redirects are not followed, and by default endpoints that resolve to
loopback/private/link-local addresses are refused so a flow cannot reach
services inside the deployment.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

SIGNATURE_HEADER = "X-Voxgate-Signature"
MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_TOLERANCE = 300.0


class WebhookError(Exception):
    """Base class: the webhook call failed."""


class WebhookTimeoutError(WebhookError):
    """No answer within the node's timeout."""


class WebhookHttpError(WebhookError):
    """The endpoint answered with a non-2xx status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"webhook returned {status}")
        self.status = status


class WebhookTargetError(WebhookError):
    """The URL is not allowed (scheme, or a private address)."""


class WebhookResponseError(WebhookError):
    """The answer was too large or not a JSON object."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, body: bytes, header: str, now: float, *, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """Check a signature header as a receiver would (constant-time, with freshness)."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, value)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not ip.is_global


class WebhookClient:
    """POSTs JSON bodies with a signature; returns the JSON object answered."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        secret: bytes,
        *,
        allow_private: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._secret = secret
        self._allow_private = allow_private
        self._wall_clock = wall_clock

    async def _check_target(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise WebhookTargetError("webhook url must be http(s) with a host")
        if self._allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname,
                parts.port or (443 if parts.scheme == "https" else 80),
                type=socket.SOCK_STREAM,
            )
        except OSError as exc:
            raise WebhookTargetError(f"cannot resolve {parts.hostname}: {exc}") from None
        # A resolver can answer differently at connect time (DNS rebinding); this check
        # stops configuration mistakes and casual probing, not a hostile DNS server.
        if any(_is_private(str(info[4][0])) for info in infos):
            raise WebhookTargetError(f"{parts.hostname} resolves to a private address")

    async def post(self, url: str, body: dict[str, Any], *, time_limit: float) -> dict[str, Any]:
        """POST ``body``; the answer's JSON object (``{}`` when it is empty)."""
        data = msgspec.json.encode(body)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "voxgate-webhook/1",
            SIGNATURE_HEADER: sign(self._secret, data, int(self._wall_clock())),
        }
        try:
            async with asyncio.timeout(time_limit):
                await self._check_target(url)
                async with self._session.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    if response.status // 100 != 2:
                        raise WebhookHttpError(response.status)
                    raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
        except TimeoutError:
            raise WebhookTimeoutError(f"no answer within {time_limit:g} s") from None
        except aiohttp.ClientError as exc:
            raise WebhookError(f"webhook request failed: {type(exc).__name__}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise WebhookResponseError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        if not raw.strip():
            return {}
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise WebhookResponseError("answer is not JSON") from None
        if not isinstance(decoded, dict):
            raise WebhookResponseError("answer is not a JSON object")
        return decoded
