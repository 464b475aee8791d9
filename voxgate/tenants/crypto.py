"""Master key, envelope encryption of tenant secrets, and keyed hashes for tokens.

Layers:
- the master key (32 bytes) lives outside Redis: ``VOXGATE_MASTER_KEY`` (base64)
  or ``<data_dir>/master.key`` (mode 0600);
- each tenant has a random data key stored in Redis only wrapped (AES-GCM) by
  the master key, with ``dek|<tenant>`` as associated data so a wrapped key
  cannot be moved to another tenant;
- each secret is sealed with its tenant's data key, with ``<tenant>\\0<name>``
  as associated data so a ciphertext cannot be replayed under another name;
- tokens (API keys, the admin token) are stored as HMAC-SHA256 under a random
  hashing key that is itself wrapped by the master key.  Hashing under the
  master key directly would make every API key invalid when the master key is
  rotated, because stored hashes cannot be recomputed without the plaintexts.

Rotating the master key rewraps the data keys and the hashing key; secret
ciphertexts and token hashes stay as they are.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import os
import secrets
from hashlib import sha256
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from voxgate.tenants import keyspace
from voxgate.tenants.errors import CryptoError
from voxgate.tenants.store import Store, to_bytes

log = logging.getLogger(__name__)

KEY_BYTES = 32
MASTER_KEY_FILE = "master.key"
_FORMAT = b"\x01"
_NONCE = 12
_KID = 8
_HASH_KEY_AD = b"hashkey"


def generate_master_key() -> bytes:
    """A fresh random master key."""
    return secrets.token_bytes(KEY_BYTES)


def encode_master_key(key: bytes) -> str:
    """Base64 form, as accepted by ``VOXGATE_MASTER_KEY``."""
    return base64.b64encode(key).decode("ascii")


def _decode_master_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"master key from {source} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"master key from {source} must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_master_key(data_dir: Path, env_value: str | None) -> bytes:
    """The master key from ``env_value`` (base64) or ``data_dir/master.key``.

    The file is created (0600, random key) when neither exists.  Blocking file
    I/O: call it at start-up or from a thread.
    """
    if env_value:
        return _decode_master_key(env_value, "VOXGATE_MASTER_KEY")
    path = data_dir / MASTER_KEY_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        key = generate_master_key()
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            _write_new(path, key)
        except FileExistsError:
            # Another process created it between our read and write: use theirs.
            return _decode_master_key(path.read_text(), str(path))
        return key
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by group/others; chmod 600 it", path)
    return _decode_master_key(text, str(path))


def _write_new(path: Path, key: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encode_master_key(key) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def save_master_key(data_dir: Path, key: bytes) -> Path:
    """Atomically replace ``data_dir/master.key`` (0600) with ``key``; blocking I/O."""
    if len(key) != KEY_BYTES:
        raise CryptoError(f"master key must be {KEY_BYTES} bytes")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / MASTER_KEY_FILE
    tmp = path.with_name(MASTER_KEY_FILE + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _write_new(tmp, key)
    tmp.replace(path)
    return path


def _subkey(key: bytes, info: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode())
    return hkdf.derive(key)


def key_id(key: bytes) -> bytes:
    """A short public fingerprint telling which master key wrapped a blob."""
    return _subkey(key, "voxgate/key-id")[:_KID]


def keyed_hash(key: bytes, purpose: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` under a subkey of ``key`` derived for ``purpose`` (hex)."""
    subkey = _subkey(key, f"voxgate/keyed-hash/{purpose}")
    return hmac.new(subkey, value.encode("utf-8", "surrogatepass"), sha256).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    """Compare two token hashes without leaking where they differ."""
    return hmac.compare_digest(a.encode(), b.encode())


def wrap_key(master: bytes, ad: bytes, key: bytes) -> bytes:
    """Encrypt ``key`` under ``master``: format byte, master key id, nonce, ciphertext."""
    nonce = os.urandom(_NONCE)
    return _FORMAT + key_id(master) + nonce + AESGCM(master).encrypt(nonce, key, ad)


def wrapped_by(blob: bytes) -> bytes:
    """The key id of the master key that wrapped ``blob``."""
    return blob[1 : 1 + _KID]


def unwrap_key(master: bytes, ad: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`wrap_key`; a wrong key, AD or tampered blob raises CryptoError."""
    if len(blob) < 1 + _KID + _NONCE + 16 or blob[:1] != _FORMAT:
        raise CryptoError("malformed wrapped key")
    if wrapped_by(blob) != key_id(master):
        raise CryptoError("key was wrapped by a different master key")
    nonce = blob[1 + _KID : 1 + _KID + _NONCE]
    try:
        return AESGCM(master).decrypt(nonce, blob[1 + _KID + _NONCE :], ad)
    except InvalidTag:
        raise CryptoError("wrapped key failed authentication") from None


def seal_with(data_key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """AES-GCM under a data key: format byte, nonce, ciphertext + tag."""
    nonce = os.urandom(_NONCE)
    return _FORMAT + nonce + AESGCM(data_key).encrypt(nonce, plaintext, ad)


def open_with(data_key: bytes, ad: bytes, blob: bytes) -> bytes:
    """Inverse of :func:`seal_with`; raises CryptoError on any mismatch."""
    if len(blob) < 1 + _NONCE + 16 or blob[:1] != _FORMAT:
        raise CryptoError("malformed ciphertext")
    try:
        return AESGCM(data_key).decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], ad)
    except InvalidTag:
        raise CryptoError("ciphertext failed authentication") from None


def _dek_ad(tenant_id: str) -> bytes:
    return b"dek|" + tenant_id.encode()


def _secret_ad(tenant_id: str, name: str) -> bytes:
    return tenant_id.encode() + b"\0" + name.encode()


class Envelope:
    """Per-tenant data keys in Redis, wrapped by the master key; seals and opens values."""

    def __init__(self, store: Store, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise CryptoError(f"master key must be {KEY_BYTES} bytes")
        self._store = store
        self._master = master_key
        self._hash_key: bytes | None = None

    async def _data_key(self, tenant_id: str, *, create: bool) -> bytes | None:
        redis_key = keyspace.tenant_key(tenant_id, "dek")
        async with self._store.guard():
            blob = await self._store.redis.get(redis_key)
            if blob is None:
                if not create:
                    return None
                fresh = secrets.token_bytes(KEY_BYTES)
                wrapped = wrap_key(self._master, _dek_ad(tenant_id), fresh)
                # NX: two writers racing to create the key must end up sharing one.
                if await self._store.redis.set(redis_key, wrapped, nx=True):
                    return fresh
                blob = await self._store.redis.get(redis_key)
                if blob is None:
                    raise CryptoError("data key vanished while being created")
        return unwrap_key(self._master, _dek_ad(tenant_id), to_bytes(blob))

    async def seal(self, tenant_id: str, name: str, plaintext: bytes) -> bytes:
        """Encrypt a tenant's named value (creates the tenant's data key on first use)."""
        data_key = await self._data_key(tenant_id, create=True)
        assert data_key is not None  # create=True never returns None
        return seal_with(data_key, _secret_ad(tenant_id, name), plaintext)

    async def open(self, tenant_id: str, name: str, blob: bytes) -> bytes:
        """Decrypt a value sealed for exactly this tenant and name."""
        data_key = await self._data_key(tenant_id, create=False)
        if data_key is None:
            raise CryptoError(f"tenant {tenant_id} has no data key")
        return open_with(data_key, _secret_ad(tenant_id, name), blob)

    async def _token_hash_key(self) -> bytes:
        if self._hash_key is not None:
            return self._hash_key
        redis_key = keyspace.system_key("hashkey")
        async with self._store.guard():
            blob = await self._store.redis.get(redis_key)
            if blob is None:
                fresh = secrets.token_bytes(KEY_BYTES)
                wrapped = wrap_key(self._master, _HASH_KEY_AD, fresh)
                if await self._store.redis.set(redis_key, wrapped, nx=True):
                    self._hash_key = fresh
                    return fresh
                blob = await self._store.redis.get(redis_key)
                if blob is None:
                    raise CryptoError("token hashing key vanished while being created")
        self._hash_key = unwrap_key(self._master, _HASH_KEY_AD, to_bytes(blob))
        return self._hash_key

    async def token_hash(self, purpose: str, token: str) -> str:
        """Keyed hash of a bearer token; stable across master key rotations."""
        return keyed_hash(await self._token_hash_key(), purpose, token)

    async def rotate_master(self, new_key: bytes) -> int:
        """Rewrap every data key and the hashing key under ``new_key``; returns keys rewrapped.

        Safe to re-run after an interruption: blobs already wrapped by the new
        key are recognised by their key id and skipped.
        """
        if len(new_key) != KEY_BYTES:
            raise CryptoError(f"master key must be {KEY_BYTES} bytes")
        old, new_id = self._master, key_id(new_key)
        redis = self._store.redis
        count = 0
        async with self._store.guard():
            targets: list[tuple[bytes, bytes]] = []
            async for raw in redis.scan_iter(match=keyspace.tenant_kind_pattern("dek"), count=500):
                key = to_bytes(raw).decode()
                tenant_id = keyspace.tenant_of(key)
                if tenant_id is not None and key == keyspace.tenant_key(tenant_id, "dek"):
                    targets.append((raw, _dek_ad(tenant_id)))
            targets.append((keyspace.system_key("hashkey").encode(), _HASH_KEY_AD))
            for redis_key, ad in targets:
                blob = await redis.get(redis_key)
                if blob is None or wrapped_by(to_bytes(blob)) == new_id:
                    continue
                plain = unwrap_key(old, ad, to_bytes(blob))
                await redis.set(redis_key, wrap_key(new_key, ad, plain))
                count += 1
        self._master = new_key
        return count
