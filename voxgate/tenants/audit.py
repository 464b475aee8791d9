"""Audit log: who changed what and when, one capped Redis stream per tenant.

Entries name the actor, the action and the target object, never secret values.
Events that outlive a tenant (its deletion, admin token rotation) go to the
system stream, selected with ``tenant_id=None``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import msgspec

from voxgate.tenants import keyspace
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.models import AuditEntry
from voxgate.tenants.store import Store, to_bytes

MAX_ENTRIES = 10_000
MAX_LIMIT = 1000
# The value type redis-py's xadd() is annotated with.
_Field = bytes | bytearray | memoryview | str | int | float
_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def _stream_key(tenant_id: str | None) -> str:
    if tenant_id is None:
        return keyspace.system_key("audit")
    return keyspace.tenant_key(tenant_id, "audit")


class AuditLog:
    """Append and page through audit entries (newest first)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_entries = max_entries

    async def append(
        self,
        tenant_id: str | None,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, str] | None = None,
    ) -> str:
        """Record one entry; returns its stream id."""
        fields: dict[_Field, _Field] = {
            "at": repr(self._clock()),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": msgspec.json.encode(detail or {}),
        }
        async with self._store.guard():
            entry_id = await self._store.redis.xadd(
                _stream_key(tenant_id), fields, maxlen=self._max_entries, approximate=True
            )
        return to_bytes(entry_id).decode()

    async def list(
        self, tenant_id: str | None, limit: int = 100, before: str | None = None
    ) -> list[AuditEntry]:
        """Newest entries first; pass the last id seen as ``before`` for the next page."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", "$.limit")
        if before is not None and not _STREAM_ID.match(before):
            raise InvalidInput("before must be an audit entry id like 1700000000000-0", "$.before")
        upper = "+" if before is None else f"({before}"
        async with self._store.guard():
            rows = await self._store.redis.xrevrange(
                _stream_key(tenant_id), max=upper, min="-", count=limit
            )
        entries: list[AuditEntry] = []
        for raw_id, raw_fields in rows or []:
            fields = {to_bytes(k).decode(): to_bytes(v) for k, v in (raw_fields or {}).items()}
            entries.append(
                AuditEntry(
                    id=to_bytes(raw_id).decode(),
                    at=float(fields.get("at", b"0")),
                    actor=fields.get("actor", b"").decode(),
                    action=fields.get("action", b"").decode(),
                    target=fields.get("target", b"").decode(),
                    detail=msgspec.json.decode(fields.get("detail", b"{}"), type=dict[str, str]),
                )
            )
        return entries
