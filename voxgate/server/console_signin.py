"""One-time console sign-in links: ``<console url>#signin=<code>``.

Whoever starts the server (``make run``) gets a link that signs the browser in
as a tenant without copying an API key.  The code is random, lives in Redis
only as its SHA-256 under ``vg:sys:console_signin:<hash>`` with a TTL, and is
redeemed at most once (``GETDEL``) by ``POST /console/signin`` for a fresh
tenant API key.  Redeeming revokes the tenant's earlier console sign-in keys,
so repeated starts do not pile up live keys.

The code travels in the URL fragment, which browsers never send to a server
(nor in a ``Referer``); the console strips it from the address bar at once.

This module must not import call handling or media; it only needs the
services' store and API keys.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Annotated

import msgspec

from voxgate.server.errors import ApiError
from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import SERVICES
from voxgate.tenants import keyspace
from voxgate.tenants.errors import NotFound
from voxgate.tenants.models import ApiKeyCreate
from voxgate.tenants.store import to_bytes

log = logging.getLogger("voxgate.console_signin")

SIGNIN_KEY_LABEL = "console sign-in"
SIGNIN_ACTOR = "console-signin"
DEFAULT_TTL = 600.0
# 32 random bytes: guessing is hopeless, so no rate limit or keyed hash is needed.
_CODE_BYTES = 32
_KIND = "console_signin"

_INVALID = ApiError(
    401, "invalid_signin_code", "this sign-in link is unknown, already used or expired"
)


class SigninRequest(msgspec.Struct, kw_only=True):
    """Body of ``POST /console/signin``."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class SigninGranted(msgspec.Struct, kw_only=True):
    """A fresh tenant API key for the console; shown this once only."""

    tenant_id: str
    token: str


def _code_key(code: str) -> str:
    # A plain hash suffices: the code is uniformly random, so unlike a password
    # there is nothing to brute-force from the digest.
    digest = hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
    return keyspace.system_key(_KIND, digest)


async def issue_signin_code(services: Services, tenant_id: str, ttl: float = DEFAULT_TTL) -> str:
    """A one-time code signing the console in as ``tenant_id``, valid for ``ttl`` seconds.

    Only the code's hash is stored.  Raises ``NotFound`` for an unknown tenant
    and ``ValueError`` for a TTL under a millisecond.
    """
    ttl_ms = int(ttl * 1000)
    if ttl_ms < 1:
        raise ValueError(f"ttl must be at least 1 ms, got {ttl!r}")
    await services.registry.get(tenant_id)
    code = secrets.token_urlsafe(_CODE_BYTES)
    async with services.store.guard():
        await services.store.redis.set(_code_key(code), tenant_id, px=ttl_ms)
    return code


async def redeem_signin_code(services: Services, code: str) -> SigninGranted:
    """Exchange ``code`` (once) for a new API key of its tenant; 401 when it is not valid."""
    async with services.store.guard():
        raw = await services.store.redis.getdel(_code_key(code))
    if raw is None:
        raise _INVALID
    tenant_id = to_bytes(raw).decode()
    try:
        tenant = await services.registry.get(tenant_id)
    except NotFound:
        raise _INVALID from None  # the tenant was deleted after the link was made
    if tenant.status != "active":
        raise ApiError(403, "tenant_suspended", "this tenant is suspended")
    created = await services.apikeys.create(
        tenant_id, ApiKeyCreate(label=SIGNIN_KEY_LABEL), SIGNIN_ACTOR
    )
    await _revoke_older_signin_keys(services, tenant_id, created.id)
    return SigninGranted(tenant_id=tenant_id, token=created.api_key)


async def _revoke_older_signin_keys(services: Services, tenant_id: str, new_key: str) -> None:
    """Revoke console sign-in keys created before ``new_key`` (the newest sign-in wins)."""
    keys = await services.apikeys.list(tenant_id)
    newest = next((k.created_at for k in keys if k.id == new_key), None)
    if newest is None:
        return
    for key in keys:
        if (
            key.id != new_key
            and not key.revoked
            and key.label == SIGNIN_KEY_LABEL
            and key.created_at <= newest
        ):
            try:
                await services.apikeys.revoke(tenant_id, key.id, SIGNIN_ACTOR)
            except NotFound:  # revoked or removed meanwhile: nothing left to do
                continue


def register(table: RouteTable) -> None:
    """Declare ``POST /console/signin`` on ``table``."""

    @table.route(
        "POST", "/console/signin", auth=Auth.PUBLIC, body=SigninRequest, response=SigninGranted,
        tags=("console",), errors=(401, 403),
        summary="Redeem a one-time console sign-in code for a new tenant API key",
    )  # fmt: skip
    async def console_signin(call: Call[SigninRequest]) -> SigninGranted:
        granted = await redeem_signin_code(call.request.app[SERVICES], call.body.code)
        log.info("console sign-in for tenant %s", granted.tenant_id)
        return granted
