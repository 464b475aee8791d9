"""The ``voxgate`` command: serve as a real subprocess, flags, env vars, management commands."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from voxgate.server.cli import main
from voxgate.server.config import Config, ConfigError, config_from
from voxgate.server.services import Services

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXGATE_")}
    env.pop("REDIS_URL", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class Serve:
    """``python -m voxgate serve`` as a child process with line-wise stdout."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxgate", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or clean_env(),
            cwd=REPO,
        )
        self._init_reader()

    def _init_reader(self) -> None:
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._buffer = b""

    def read_until(self, needle: str, timeout: float = START_TIMEOUT) -> list[str]:
        """Stdout lines up to and including the first one containing ``needle``."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                lines.append(line.decode())
                if needle in lines[-1]:
                    return lines
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and not self._selector.select(0)):
                raise AssertionError(f"no {needle!r} on stdout; got {lines}; {self.stderr()}")
            if self._selector.select(remaining):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"exited: {lines}; {self.stderr()}")
                self._buffer += chunk

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def serve_procs() -> Iterator[list[Serve]]:
    started: list[Serve] = []
    yield started
    for proc in started:
        proc.kill()


def http_get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_serve_starts_answers_and_drains_on_sigterm(
    tmp_path: Path, serve_procs: list[Serve]
) -> None:
    ready_file = tmp_path / "ready.json"
    args = ("--http-port", "0", "--sip-port", "0", "--data-dir", str(tmp_path / "data"),
            "--ready-file", str(ready_file), "--drain-timeout", "5")  # fmt: skip
    server = Serve(*args)
    serve_procs.append(server)
    lines = server.read_until("listening on")
    ready = json.loads(ready_file.read_text())
    assert ready["http"].startswith("http://127.0.0.1:") and not ready["http"].endswith(":0")
    token = ready["admin_token"]
    assert [line for line in lines if token in line], "generated admin token printed once"
    assert sum(token in line for line in lines) == 1
    assert oct(ready_file.stat().st_mode & 0o777) == "0o600"

    assert http_get(ready["http"] + "/healthz") == (200, b'{"status":"ok"}')
    assert http_get(ready["http"] + "/system/tenants", token)[0] == 200
    assert http_get(ready["http"] + "/system/tenants", "nope")[0] == 401
    assert server.stop() == 0
    err = server.stderr()
    assert "Traceback" not in err
    assert token not in err
    access = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {entry["route"] for entry in access} >= {"/healthz", "/system/tenants"}

    # second start on the same data dir: the token is stored, not generated again
    again = Serve(*args)
    serve_procs.append(again)
    lines = again.read_until("listening on")
    ready = json.loads(ready_file.read_text())
    assert "admin_token" not in ready
    assert not any("Admin token" in line for line in lines)
    assert http_get(ready["http"] + "/system/tenants", token)[0] == 200
    assert again.stop() == 0


def test_env_admin_token_and_env_flags(tmp_path: Path, serve_procs: list[Serve]) -> None:
    ready_file = tmp_path / "ready.json"
    env = clean_env(
        VOXGATE_ADMIN_TOKEN="env-admin-token-123",
        VOXGATE_HTTP_PORT="0",
        VOXGATE_SIP_PORT="0",
        VOXGATE_DATA_DIR=str(tmp_path / "data"),
        VOXGATE_READY_FILE=str(ready_file),
    )
    server = Serve(env=env)
    serve_procs.append(server)
    server.read_until("listening on")
    ready = json.loads(ready_file.read_text())
    assert "admin_token" not in ready
    assert http_get(ready["http"] + "/system/status", "env-admin-token-123")[0] == 200
    assert server.stop() == 0


def test_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "voxgate", "serve", "--http-port", str(port),
             "--sip-port", "0", "--data-dir", str(tmp_path / "data")],
            capture_output=True, env=clean_env(), cwd=REPO, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert f"{port}" in lines[0] and "in use" in lines[0]
    assert "--http-port" in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--http-port", "abc"],
        ["serve", "--http-port", "70000"],
        ["serve", "--rtp-ports", "30000-20000"],
        ["serve", "--rtp-ports", "20000"],
        ["serve", "--drain-timeout", "soon"],
        ["serve", "--public-url", "ftp://x"],
        ["serve", "--redis-url", "http://x"],
        ["serve", "--no-such-flag"],
        ["serve", "--log-level", "loud"],
        ["frobnicate"],
        [],
        ["tenant"],
    ],
)
def test_bad_flags_are_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("voxgate")


def test_bad_env_value_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOXGATE_SIP_PORT", "five")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "--sip-port" in err and len(err.strip().splitlines()) == 1


def test_config_precedence() -> None:
    env = {
        "VOXGATE_HOST": "0.0.0.0",
        "VOXGATE_HTTP_PORT": "9000",
        "REDIS_URL": "redis://fallback:6379",
        "VOXGATE_RTP_PORTS": "30000-30099",
        "VOXGATE_ADMIN_TOKEN": "t",
        "VOXGATE_MILVUS_URI": "http://milvus:19530",
    }
    config = config_from({"http_port": "0", "drain_timeout": "2.5"}, env)
    assert config.host == "0.0.0.0"
    assert config.http_port == 0  # the flag wins over the environment
    assert config.rtp_ports == (30000, 30099)
    assert config.redis_url == "redis://fallback:6379"
    assert config.drain_timeout == 2.5
    assert config.admin_token == "t"
    assert config.milvus_uri == "http://milvus:19530"
    env["VOXGATE_REDIS_URL"] = "redis://primary:6379"
    assert config_from({}, env).redis_url == "redis://primary:6379"
    assert config_from({}, {}) == Config(data_dir=Path.cwd() / ".voxgate")
    # Every path flag is pinned to an absolute path at start-up.
    relative = config_from({"data_dir": "state", "ready_file": "r.json", "milvus_uri": "kb.db"}, {})
    assert relative.data_dir == Path.cwd() / "state"
    assert relative.ready_file == Path.cwd() / "r.json"
    assert relative.milvus_uri == str(Path.cwd() / "kb.db")
    with pytest.raises(ConfigError, match="--data-dir"):
        config_from({"data_dir": " "}, {})
    with pytest.raises(ConfigError, match="--http-port"):
        config_from({"http_port": "-1"}, {})


def with_services(
    config: Config, work: Callable[[Services], Coroutine[Any, Any, object]]
) -> object:
    async def run() -> object:
        services = await Services.open(config)
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(run())


def test_management_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    env_before = dict(os.environ)
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("voxgate 0.")

    assert main(["tenant", "create", "acme", "--quotas", '{"max_workers": 3}', *data]) == 0
    out = capsys.readouterr().out
    tenant_id = out.split()[1]
    assert tenant_id.startswith("t_") and "API key (shown once): vg_" in out
    api_key = out.split("API key (shown once): ")[1].split()[0]

    assert main(["tenant", "list", *data]) == 0
    out = capsys.readouterr().out
    assert tenant_id in out and "acme" in out

    assert main(["tenant", "show", tenant_id, *data]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["quotas"]["max_workers"] == 3 and shown["status"] == "active"

    assert main(["apikey", "create", tenant_id, "--label", "ops", *data]) == 0
    out = capsys.readouterr().out
    key_id = out.split()[2]
    assert key_id.startswith("key_") and "vg_" in out
    assert main(["apikey", "revoke", tenant_id, key_id, *data]) == 0
    assert "revoked" in capsys.readouterr().out

    assert main(["tenant", "suspend", tenant_id, *data]) == 0
    assert main(["tenant", "resume", tenant_id, *data]) == 0
    assert main(["admin-token", "rotate", *data]) == 0
    assert "vga_" in capsys.readouterr().out

    master_before = (tmp_path / "data" / "master.key").read_text()
    store_config = Config(data_dir=tmp_path / "data")

    async def put_secret(services: Services) -> object:
        await services.secrets.put(tenant_id, "llm", {"api_key": "v1"}, "test")
        return None

    async def read_back(services: Services) -> object:
        return (
            await services.secrets.get(tenant_id, "llm"),
            await services.apikeys.authenticate(api_key),
        )

    with_services(store_config, put_secret)
    assert main(["master-key", "rotate", *data]) == 0
    assert "rotated" in capsys.readouterr().out
    assert (tmp_path / "data" / "master.key").read_text() != master_before
    assert not (tmp_path / "data" / "master.key.rotating").exists()
    # secrets and key hashes survive the rotation
    assert with_services(store_config, read_back) == ({"api_key": "v1"}, tenant_id)

    assert main(["tenant", "create", "x", "--quotas", '{"max_workers": 0}', *data]) == 2
    assert "max_workers" in capsys.readouterr().err

    assert main(["tenant", "delete", tenant_id, *data]) == 0
    capsys.readouterr()
    assert main(["tenant", "show", tenant_id, *data]) == 1
    err = capsys.readouterr().err
    assert err.startswith("voxgate: error:") and len(err.strip().splitlines()) == 1
    assert dict(os.environ) == env_before
