"""The super-admin bearer token, stored only as a keyed hash."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from voxgate.tenants import keyspace
from voxgate.tenants.audit import AuditLog
from voxgate.tenants.crypto import Envelope, constant_time_equal
from voxgate.tenants.errors import InvalidInput
from voxgate.tenants.store import Store, to_bytes

HASH_PURPOSE = "admin"
_MAX_TOKEN = 512


def _generate() -> str:
    return "vga_" + secrets.token_urlsafe(32)


class AdminTokens:
    """Set up, check and rotate the admin token."""

    def __init__(
        self, store: Store, master_key: bytes, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._envelope = Envelope(store, master_key)
        self._audit = AuditLog(store, clock=clock)
        self._key = keyspace.system_key("admin_token")

    async def ensure(self, env_token: str | None) -> str | None:
        """Make sure a token is stored; returns the plaintext only if one was generated.

        ``env_token`` (``VOXGATE_ADMIN_TOKEN``) replaces whatever is stored.
        """
        if env_token is not None:
            if not env_token.strip() or len(env_token) > _MAX_TOKEN:
                raise InvalidInput(
                    f"admin token must be 1..{_MAX_TOKEN} non-blank characters", "$.admin_token"
                )
            token_hash = await self._envelope.token_hash(HASH_PURPOSE, env_token)
            async with self._store.guard():
                await self._store.redis.set(self._key, token_hash)
            return None
        token = _generate()
        token_hash = await self._envelope.token_hash(HASH_PURPOSE, token)
        async with self._store.guard():
            created = await self._store.redis.set(self._key, token_hash, nx=True)
        if not created:
            return None
        await self._audit.append(None, "system", "admin_token.generate", "admin_token")
        return token

    async def verify(self, token: str) -> bool:
        """True if ``token`` is the current admin token (constant-time comparison)."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN:
            return False
        token_hash = await self._envelope.token_hash(HASH_PURPOSE, token)
        async with self._store.guard():
            stored = await self._store.redis.get(self._key)
        if stored is None:
            return False
        return constant_time_equal(to_bytes(stored).decode(), token_hash)

    async def rotate(self, actor: str = "admin") -> str:
        """Replace the token with a fresh one and return it (shown once)."""
        token = _generate()
        token_hash = await self._envelope.token_hash(HASH_PURPOSE, token)
        async with self._store.guard():
            await self._store.redis.set(self._key, token_hash)
        await self._audit.append(None, actor, "admin_token.rotate", "admin_token")
        return token
