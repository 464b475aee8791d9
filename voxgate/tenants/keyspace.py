"""The one place that names Redis keys.

Tenant data lives under ``vg:{<tenant_id>}:<kind>:<id>``; the braces are a Redis
Cluster hash tag, so all of a tenant's keys share one slot and multi-key
operations on them stay legal.  System-wide keys live under ``vg:sys:``.
"""

from __future__ import annotations

import re

from voxgate.tenants.errors import UnknownTenantId

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def tenant_prefix(tenant_id: str) -> str:
    """``vg:{tenant}:`` — every key of the tenant starts with this.

    A malformed id raises :class:`UnknownTenantId` (a ``NotFound`` and a ``ValueError``).
    """
    if not _TENANT_ID.match(tenant_id):
        raise UnknownTenantId(tenant_id)
    return f"vg:{{{tenant_id}}}:"


def tenant_key(tenant_id: str, kind: str, ident: str = "") -> str:
    """Key of one tenant-owned object, e.g. ``vg:{t1}:agent:a1``."""
    key = f"{tenant_prefix(tenant_id)}{kind}"
    return f"{key}:{ident}" if ident else key


def tenant_pattern(tenant_id: str) -> str:
    """SCAN pattern matching every key of the tenant (braces escaped for MATCH)."""
    return f"vg:\\{{{tenant_id}\\}}:*"


def system_key(kind: str, ident: str = "") -> str:
    """Key of a system-wide object, e.g. ``vg:sys:tenants``."""
    return f"vg:sys:{kind}:{ident}" if ident else f"vg:sys:{kind}"


def tenant_kind_pattern(kind: str) -> str:
    """SCAN pattern matching one kind of key across every tenant, e.g. all data keys."""
    return f"vg:\\{{*\\}}:{kind}"


def tenant_of(key: str) -> str | None:
    """The tenant id of a tenant key (``vg:{t1}:…`` -> ``t1``), or None for other keys."""
    if not key.startswith("vg:{"):
        return None
    end = key.find("}", 4)
    if end < 0:
        return None
    tenant_id = key[4:end]
    return tenant_id if _TENANT_ID.match(tenant_id) else None
