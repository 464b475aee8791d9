"""Tenant API for SIP: ``GET``/``PUT /tenants/{tenant_id}/api/sip/acl`` (inbound access list).

The digest password of a ``PUT`` goes to the tenant's secret vault (secret
``sip_acl``) and is never returned; ``GET`` shows the networks, the username
and whether a password is set.
"""

from __future__ import annotations

from typing import Any

import msgspec

from voxgate.server.routing import Auth, Call, RouteTable
from voxgate.server.services import Services
from voxgate.server.state import SERVICES
from voxgate.tenants.sip_acl import SECRET_NAME, SipAcl, SipAclStore, SipAclUpdate

BASE = "/tenants/{tenant_id}/api"


class SipAclView(msgspec.Struct, kw_only=True):
    """The inbound ACL as the API shows it (the password never leaves the vault)."""

    cidrs: list[str]
    username: str | None
    password_set: bool
    updated_at: float


def _services(call: Call[Any]) -> Services:
    return call.request.app[SERVICES]


async def _view(services: Services, tenant_id: str, acl: SipAcl) -> SipAclView:
    names = {s.name for s in (await services.secrets.list(tenant_id)).secrets}
    return SipAclView(
        cidrs=acl.cidrs,
        username=acl.username,
        password_set=acl.username is not None and SECRET_NAME in names,
        updated_at=acl.updated_at,
    )


def register(table: RouteTable) -> None:
    """Declare the SIP tenant routes on ``table``."""
    tags = ("sip",)

    @table.route(
        "GET", f"{BASE}/sip/acl", auth=Auth.TENANT, response=SipAclView,
        summary="Inbound SIP access list (source networks, optional digest user)", tags=tags,
    )  # fmt: skip
    async def get_acl(call: Call[None]) -> SipAclView:
        services = _services(call)
        acl = await SipAclStore(services.store).get(call.tenant_id)
        return await _view(services, call.tenant_id, acl)

    @table.route(
        "PUT", f"{BASE}/sip/acl", auth=Auth.TENANT, body=SipAclUpdate, response=SipAclView,
        summary="Replace the inbound SIP access list (empty = anyone may call)", tags=tags,
    )  # fmt: skip
    async def put_acl(call: Call[SipAclUpdate]) -> SipAclView:
        services = _services(call)
        acl = await SipAclStore(services.store).put(call.tenant_id, call.body, call.actor)
        if call.body.password is not None:
            await services.secrets.put(
                call.tenant_id, SECRET_NAME, {"password": call.body.password}, call.actor
            )
        elif acl.username is None:
            names = {s.name for s in (await services.secrets.list(call.tenant_id)).secrets}
            if SECRET_NAME in names:
                await services.secrets.delete(call.tenant_id, SECRET_NAME, call.actor)
        return await _view(services, call.tenant_id, acl)
