"""Black-box harness: a real ``voxgate serve`` subprocess, spoken to over HTTP/WS/SIP only.

Nothing here imports the ``voxgate`` package: these tests rely on the
documented contracts alone (the installed console script, its flags and env
vars, the ready file, the HTTP/Twilio/SIP surfaces), as an outside test would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

VOXGATE = Path(sys.executable).parent / "voxgate"
START_TIMEOUT = 30.0


@dataclass
class Served:
    """One running server: its process, ready file content and captured output."""

    proc: subprocess.Popen[bytes]
    ready_file: Path
    data_dir: Path
    ready: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return self.ready["http"]

    @property
    def ws(self) -> str:
        return "ws" + self.http[len("http") :]

    def sip_addr(self, key: str = "sip_udp") -> tuple[str, int]:
        host, _, port = self.ready[key].rpartition(":")
        return host.strip("[]"), int(port)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def start_server(
    tmp: Path,
    *,
    args: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
    flags: bool = True,
    data_dir: Path | None = None,
    ready_file: Path | None = None,
) -> Served:
    """Start ``voxgate serve`` and wait for its ready file (bounded).

    With ``flags`` the test passes ``--http-port 0 --sip-port 0 --ready-file
    --data-dir`` itself; without, the caller supplies them (e.g. as env vars).
    """
    if not VOXGATE.exists():
        pytest.fail(f"{VOXGATE} missing: install the package (pip install -e .)")
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or tmp / "data"
    ready_file = ready_file or tmp / "ready.json"
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VOXGATE_") and key != "REDIS_URL"
    }
    full_env.update(env or {})
    command = [str(VOXGATE), "serve", *args]
    if flags:
        command += ["--http-port", "0", "--sip-port", "0"]
        command += ["--ready-file", str(ready_file), "--data-dir", str(data_dir)]
    n = len(list(tmp.glob("stdout-*.log")))
    stdout_path, stderr_path = tmp / f"stdout-{n}.log", tmp / f"stderr-{n}.log"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(command, env=full_env, stdout=out, stderr=err, cwd=tmp)
    deadline = time.monotonic() + START_TIMEOUT
    # Polling a file another process writes: the ready file is the contract's signal.
    while not ready_file.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"voxgate exited with {proc.returncode} before ready:\n"
                + stderr_path.read_text(errors="replace")[-3000:]
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("voxgate did not write its ready file in time")
        time.sleep(0.02)
    ready = json.loads(ready_file.read_text())
    return Served(proc, ready_file, data_dir, ready, stdout_path, stderr_path)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``serve(**start_server kwargs)``; every server is stopped afterwards."""
    started: list[Served] = []

    def factory(**kwargs: Any) -> Served:
        sub = tmp_path / f"s{len(started)}"
        served = start_server(sub, **kwargs)
        started.append(served)
        return served

    yield factory
    for served in started:
        served.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server shared by the API tests (public URL set so signatures are predictable)."""
    tmp = tmp_path_factory.mktemp("contract-server")
    served = start_server(tmp, args=("--public-url", "http://voice.example.test"))
    try:
        yield served
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            served.terminate(15)
        served.kill()


# -- Twilio signature, written from the published algorithm -------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The product runs in a subprocess here: the in-process loop-blocking guard
    has nothing to watch, and starting a server from a test blocks on purpose."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.allow_blocking)


# -- HTTP -------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call_api(
    session: Any, method: str, url: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """One JSON request; returns (status, decoded body or None)."""
    headers = bearer(token) if token else {}
    data = None if body is None else json.dumps(body)
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw.strip() else None)


def assert_error(status: int, body: Any, expected: int) -> None:
    """Errors are ``{"error": {"code", "message"}}`` with the expected status."""
    assert status == expected, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
