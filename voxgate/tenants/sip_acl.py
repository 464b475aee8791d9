"""A tenant's inbound SIP access list: which sources may call its numbers.

Empty (the default) means anyone may call, as the SIP contract says.  With
``cidrs`` set, INVITEs from other source addresses get 403.  With a digest
``username`` set, callers must also authenticate; the password lives in the
tenant's secret vault (secret ``sip_acl``, ``{"password": ...}``), never in
this record.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Annotated

import msgspec

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.store import Store, to_bytes

__all__ = ["SECRET_NAME", "SipAcl", "SipAclStore", "SipAclUpdate", "source_allowed"]

SECRET_NAME = "sip_acl"
MAX_CIDRS = 256

Cidr = Annotated[
    str, msgspec.Meta(max_length=64, description="IPv4/IPv6 network, e.g. 203.0.113.0/24")
]
Username = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[!-~]+$")]


class SipAcl(msgspec.Struct, kw_only=True):
    """The stored inbound ACL (no password)."""

    cidrs: list[str] = msgspec.field(default_factory=list)
    username: str | None = None
    updated_at: float = 0.0

    @property
    def restricts(self) -> bool:
        """True when any check applies."""
        return bool(self.cidrs) or self.username is not None


class SipAclUpdate(msgspec.Struct, kw_only=True):
    """``PUT`` body: CIDRs, and optional digest credentials (password write-only)."""

    cidrs: Annotated[list[Cidr], msgspec.Meta(max_length=MAX_CIDRS)] = msgspec.field(
        default_factory=list
    )
    username: Username | None = None
    password: Annotated[str, msgspec.Meta(min_length=8, max_length=256)] | None = None


def _normalise(cidrs: list[str]) -> list[str]:
    out: list[str] = []
    for index, text in enumerate(cidrs):
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            raise InvalidInput(f"not an IP network: {text!r}", f"$.cidrs[{index}]") from None
    return out


def source_allowed(acl: SipAcl, host: str) -> bool:
    """Whether ``host`` (the packet's source IP) is inside one of the ACL's networks."""
    if not acl.cidrs:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(c) for c in acl.cidrs)


class SipAclStore:
    """Read and write tenants' inbound SIP ACLs."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._audit = AuditLog(store, clock=clock)

    @staticmethod
    def _key(tenant_id: str) -> str:
        return keyspace.tenant_key(tenant_id, "sip_acl")

    async def get(self, tenant_id: str) -> SipAcl:
        """The tenant's ACL (an empty, open one when none is stored)."""
        key = self._key(tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.get(key)
        if raw is None:
            return SipAcl()
        return msgspec.json.decode(to_bytes(raw), type=SipAcl)

    async def put(self, tenant_id: str, body: SipAclUpdate, actor: str = "system") -> SipAcl:
        """Replace the ACL.  The password (if given) goes to the secret vault by the caller."""
        if body.password is not None and body.username is None:
            raise InvalidInput("a password needs a username", "$.password")
        acl = SipAcl(cidrs=_normalise(body.cidrs), username=body.username, updated_at=self._clock())
        async with self._store.guard():
            await self._store.redis.set(self._key(tenant_id), msgspec.json.encode(acl))
        await self._audit.append(
            tenant_id, actor, "sip_acl.update", "sip_acl", {"cidrs": str(len(acl.cidrs))}
        )
        return acl
