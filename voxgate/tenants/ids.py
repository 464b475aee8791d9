"""Random identifiers: ``t_`` + 10 base32 chars for tenants, ``<kind>_`` + 12 for the rest."""

from __future__ import annotations

import base64
import secrets


def _base32(chars: int) -> str:
    raw = secrets.token_bytes((chars * 5 + 7) // 8)
    return base64.b32encode(raw).decode("ascii").lower()[:chars]


def new_tenant_id() -> str:
    """A tenant id; lowercase so it is valid in Redis hash tags, URLs and key prefixes."""
    return "t_" + _base32(10)


def new_id(kind: str) -> str:
    """An object id such as ``ag_…``, ``num_…`` or ``key_…`` (60 random bits)."""
    return f"{kind}_{_base32(12)}"
