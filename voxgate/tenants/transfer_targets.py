"""Named transfer targets: what a flow's ``transfer`` node may call by name.

A flow is a portable document (templates, exports, the designer), so it names
where a caller goes ("operator", "billing") rather than carrying a tenant's
phone numbers; each tenant maps those names to +E.164 numbers here
(``GET/PUT /tenants/{id}/api/transfer-targets``).  A transfer node may still
carry a +E.164 number directly.  Either way the number then passes the
tenant's dial policy (toll-fraud guard) like any outbound leg.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated

import msgspec
from msgspec import Meta

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.errors import NotFound
from voxgate.tenants.models import E164, decode_json, revalidate
from voxgate.tenants.store import Store, require_tenant, to_bytes

__all__ = [
    "MAX_TARGETS",
    "TARGET_NAME_PATTERN",
    "TransferTargetStore",
    "TransferTargets",
    "UnknownTransferTarget",
    "is_number",
]

TARGET_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
MAX_TARGETS = 100

_NAME = re.compile(TARGET_NAME_PATTERN)
# What a transfer node may carry instead of a name: a number, with or without "+".
_NUMBER = re.compile(r"^\+?[0-9][0-9 ().-]{2,30}$")

TargetName = Annotated[
    str, Meta(pattern=TARGET_NAME_PATTERN, description="Name a flow's transfer node uses.")
]


class TransferTargets(msgspec.Struct, kw_only=True):
    """A tenant's named transfer targets (``GET/PUT …/transfer-targets``)."""

    targets: Annotated[
        dict[TargetName, E164],
        Meta(max_length=MAX_TARGETS, description="Target name -> +E.164 number."),
    ] = msgspec.field(default_factory=dict)


class UnknownTransferTarget(NotFound):
    """A flow named a transfer target the tenant has not defined."""


def is_number(target: str) -> bool:
    """True when ``target`` is a phone number rather than a target name."""
    return bool(_NUMBER.match(target))


def _key(tenant_id: str) -> str:
    return keyspace.tenant_key(tenant_id, "transfer_targets")


class TransferTargetStore:
    """Per-tenant transfer target names: read, replace (audited), resolve."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._audit = AuditLog(store, clock=clock)

    async def get(self, tenant_id: str) -> TransferTargets:
        key = _key(tenant_id)
        await require_tenant(self._store, tenant_id)
        async with self._store.guard():
            raw = await self._store.redis.get(key)
        return TransferTargets() if raw is None else decode_json(to_bytes(raw), TransferTargets)

    async def put(
        self, tenant_id: str, targets: TransferTargets, actor: str = "system"
    ) -> TransferTargets:
        """Replace the tenant's targets (invalid names/numbers raise ``InvalidInput``)."""
        targets = revalidate(targets)
        key = _key(tenant_id)
        await require_tenant(self._store, tenant_id)
        async with self._store.guard():
            await self._store.redis.set(key, msgspec.json.encode(targets))
        await self._audit.append(
            tenant_id,
            actor,
            "transfer_targets.put",
            "transfer_targets",
            {"names": ",".join(sorted(targets.targets))},
        )
        return targets

    async def resolve(self, tenant_id: str, target: str) -> str:
        """The number behind ``target``: a number passes through, a name is looked up.

        Raises :class:`UnknownTransferTarget` for a name the tenant has not defined.
        The result still has to pass the dial policy.
        """
        target = target.strip()
        if is_number(target):
            return target
        if not _NAME.match(target):
            raise UnknownTransferTarget("not a transfer target name or a phone number")
        number = (await self.get(tenant_id)).targets.get(target)
        if number is None:
            raise UnknownTransferTarget(f"no transfer target named {target!r}")
        return number
