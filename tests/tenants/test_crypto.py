from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from voxgate.tenants import keyspace
from voxgate.tenants.crypto import (
    Envelope,
    constant_time_equal,
    encode_master_key,
    generate_master_key,
    keyed_hash,
    load_master_key,
    open_with,
    save_master_key,
    seal_with,
    unwrap_key,
    wrap_key,
)
from voxgate.tenants.errors import CryptoError
from voxgate.tenants.store import Store


def test_master_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    key = load_master_key(tmp_path, None)
    assert len(key) == 32
    mode = stat.S_IMODE((tmp_path / "master.key").stat().st_mode)
    assert mode == 0o600
    assert load_master_key(tmp_path, None) == key


def test_master_key_from_env_wins_and_is_validated(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_master_key(tmp_path, base64.b64encode(key).decode()) == key
    assert not (tmp_path / "master.key").exists()
    with pytest.raises(CryptoError, match="32 bytes"):
        load_master_key(tmp_path, base64.b64encode(b"short").decode())
    with pytest.raises(CryptoError, match="base64"):
        load_master_key(tmp_path, "not base64 !!")


def test_save_master_key_replaces_atomically(tmp_path: Path) -> None:
    first = load_master_key(tmp_path, None)
    second = generate_master_key()
    save_master_key(tmp_path, second)
    assert load_master_key(tmp_path, None) == second != first
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    assert (tmp_path / "master.key").read_text().strip() == encode_master_key(second)


def test_wrap_and_seal_reject_wrong_key_or_associated_data() -> None:
    master, other = os.urandom(32), os.urandom(32)
    blob = wrap_key(master, b"dek|t_a", b"k" * 32)
    assert unwrap_key(master, b"dek|t_a", blob) == b"k" * 32
    with pytest.raises(CryptoError):
        unwrap_key(master, b"dek|t_b", blob)
    with pytest.raises(CryptoError):
        unwrap_key(other, b"dek|t_a", blob)
    sealed = seal_with(master, b"ad", b"payload")
    assert open_with(master, b"ad", sealed) == b"payload"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for key, ad, data in (
        (master, b"ad2", sealed),
        (other, b"ad", sealed),
        (master, b"ad", tampered),
    ):
        with pytest.raises(CryptoError):
            open_with(key, ad, data)
    with pytest.raises(CryptoError):
        open_with(master, b"ad", b"\x01short")


def test_keyed_hash_depends_on_key_purpose_and_value() -> None:
    key = os.urandom(32)
    h = keyed_hash(key, "apikey", "vg_x")
    assert len(h) == 64 and h == keyed_hash(key, "apikey", "vg_x")
    assert h != keyed_hash(key, "admin", "vg_x")
    assert h != keyed_hash(key, "apikey", "vg_y")
    assert h != keyed_hash(os.urandom(32), "apikey", "vg_x")
    flipped = h[:-1] + ("1" if h[-1] == "0" else "0")
    assert constant_time_equal(h, h) and not constant_time_equal(h, flipped)
    assert not constant_time_equal(h, h[:-1])


async def test_envelope_binds_ciphertext_to_tenant_and_name(
    store: Store, master_key: bytes
) -> None:
    env = Envelope(store, master_key)
    blob = await env.seal("t_a", "twilio", b"marker")
    assert await env.open("t_a", "twilio", blob) == b"marker"
    with pytest.raises(CryptoError):
        await env.open("t_a", "llm", blob)
    await env.seal("t_b", "twilio", b"other")
    with pytest.raises(CryptoError):
        await env.open("t_b", "twilio", blob)
    with pytest.raises(CryptoError):
        await env.open("t_c", "twilio", blob)
    # The stored data key is wrapped, not raw, and bound to its tenant.
    wrapped = await store.redis.get(keyspace.tenant_key("t_a", "dek"))
    assert wrapped is not None and len(wrapped) > 32
    with pytest.raises(CryptoError):
        await Envelope(store, os.urandom(32)).open("t_a", "twilio", blob)


async def test_master_rotation_keeps_values_and_token_hashes(
    store: Store, master_key: bytes
) -> None:
    env = Envelope(store, master_key)
    blobs = {tid: await env.seal(tid, "s", tid.encode()) for tid in ("t_a", "t_b", "t_c")}
    token_hash = await env.token_hash("apikey", "vg_token")
    new_key = generate_master_key()
    assert await env.rotate_master(new_key) == 4  # three data keys + the hashing key
    assert await env.rotate_master(new_key) == 0  # idempotent when re-run

    fresh = Envelope(store, new_key)
    for tid, blob in blobs.items():
        assert await fresh.open(tid, "s", blob) == tid.encode()
    assert await fresh.token_hash("apikey", "vg_token") == token_hash
    with pytest.raises(CryptoError):
        await Envelope(store, master_key).open("t_a", "s", blobs["t_a"])
