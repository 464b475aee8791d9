"""Errors of the tenant control plane; each carries a stable ``code`` for HTTP bodies."""

from __future__ import annotations


class TenantsError(Exception):
    """Base of every control-plane error; ``code`` is stable, ``message`` is for humans."""

    code = "tenants_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(TenantsError):
    """The object does not exist (or belongs to another tenant, which looks the same)."""

    code = "not_found"


class UnknownTenantId(NotFound, ValueError):
    """A tenant id that cannot exist (bad syntax): as far as callers care, not found."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} not found")


class Conflict(TenantsError):
    """The request clashes with existing state (e.g. a number owned by someone)."""

    code = "conflict"


class QuotaExceeded(TenantsError):
    """The tenant's quota does not allow this (reported as HTTP 409)."""

    code = "quota_exceeded"


class InvalidInput(TenantsError):
    """Input failed validation; ``path`` names the field, e.g. ``$.quotas.max_cps``."""

    code = "invalid_input"

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.path = path


class StoreUnavailable(TenantsError):
    """Redis cannot be reached right now; the caller may retry later."""

    code = "store_unavailable"


class CryptoError(TenantsError):
    """A key is missing, malformed, or a ciphertext failed authentication."""

    code = "crypto_error"
