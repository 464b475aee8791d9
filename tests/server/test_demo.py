"""``make run``: demo seeding, the next-steps block, and the real command from a clean folder.

The subprocess tests run ``python -m voxgate.server.demo`` (what ``make run``
runs) from an empty working directory with the *default* data dir, as a
newcomer does; only the ports are 0 so tests never take 8080/5060.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.server.test_cli import Serve, clean_env, http_get
from tests.server.test_secrets_at_rest import files_containing
from voxgate.server.config import Config
from voxgate.server.demo import DEMO_AGENT, DEMO_KEY_LABEL, DEMO_TENANT, DemoAccess, seed_demo
from voxgate.server.runtime import Server


async def test_demo_is_seeded_once_with_one_live_demo_key(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", http_port=0, sip_port=0)
    accesses: list[DemoAccess] = []

    async def seed(server: Server) -> None:
        accesses.append(await seed_demo(server))

    for attempt in range(2):
        server = Server(config, on_started=[seed])
        await server.start()
        try:
            services = server.services
            tenants = await services.registry.list()
            assert [t.name for t in tenants] == [DEMO_TENANT]
            agents = await services.agents.list(tenants[0].id)
            assert [(a.name, a.template, a.kind) for a in agents] == [
                (DEMO_AGENT, "demo-receptionist", "flow")
            ]
            access = accesses[-1]
            assert access.created is (attempt == 0)
            assert access.api_key.startswith("vg_")
            assert await services.apikeys.authenticate(access.api_key) == tenants[0].id
            live = [k for k in await services.apikeys.list(tenants[0].id) if not k.revoked]
            assert [k.label for k in live] == [DEMO_KEY_LABEL], "exactly one demo key is live"
            if attempt == 1:
                assert await services.apikeys.authenticate(accesses[0].api_key) is None
        finally:
            await server.stop()
    secrets = [a.api_key.encode() for a in accesses] + [a.signin_code.encode() for a in accesses]
    assert await asyncio.to_thread(files_containing, tmp_path, secrets) == []


class Demo(Serve):
    """``python -m voxgate.server.demo`` in its own process group, from ``cwd``."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxgate.server.demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
            cwd=cwd,
            # A terminal's Ctrl-C signals the whole foreground process group.
            start_new_session=True,
        )
        self._init_reader()

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to every process of the group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def post_json(url: str, body: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


@pytest.mark.timeout(240)
def test_make_run_from_a_clean_folder_default_data_dir_ctrl_c_and_second_start(
    tmp_path: Path,
) -> None:
    cwd = tmp_path / "newcomer"
    cwd.mkdir()
    args = ("--http-port", "0", "--sip-port", "0", "--ready-file", "ready.json")
    demo = Demo(cwd, *args)
    try:
        lines = demo.read_until("the next `make run` resumes")
        ready = json.loads((cwd / "ready.json").read_text())
        base = ready["http"]
        redis_conf = cwd / ".voxgate" / "redis" / "redis.conf"
        assert redis_conf.exists(), "the default data dir is under the cwd"
        conf = redis_conf.read_text()
        assert f'logfile "{cwd}/.voxgate/redis/redis.log"' in conf
        assert http_get(base + "/healthz") == (200, b'{"status":"ok"}')

        text = "\n".join(lines)
        assert "(demo tenant created)" in text
        link = next(line.strip() for line in lines if "#signin=" in line)
        assert link.startswith(base + "/console/#signin=")
        assert f'Press "Call" on "{DEMO_AGENT}"' in text
        key = next(line.split("KEY=")[1] for line in lines if "KEY=vg_" in line)
        curls = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curls) == 2
        tenant = curls[0].split("/tenants/")[1].split("/")[0]
        status, agents = http_get(f"{base}/tenants/{tenant}/api/agents", key)
        assert status == 200 and DEMO_AGENT in agents.decode()
        # The sign-in link works once.
        code = link.split("#signin=")[1]
        status, granted = post_json(base + "/console/signin", {"code": code})
        assert status == 200 and granted["tenant_id"] == tenant

        children = descendants(demo.proc.pid)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        assert demo.interrupt() == 0
        assert still_running(children) == []
        err = demo.stderr()
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert key not in err and code not in err
    finally:
        demo.kill()

    again = Demo(cwd, *args)
    try:
        lines = again.read_until("the next `make run` resumes")
        assert not any("(demo tenant created)" in line for line in lines)
        base = json.loads((cwd / "ready.json").read_text())["http"]
        new_key = next(line.split("KEY=")[1] for line in lines if "KEY=vg_" in line)
        status, agents = http_get(f"{base}/tenants/{tenant}/api/agents", new_key)
        assert status == 200 and DEMO_AGENT in agents.decode(), "the stored demo is back"
        assert http_get(f"{base}/tenants/{tenant}/api/agents", key)[0] == 401
        assert again.interrupt() == 0
    finally:
        again.kill()


def test_make_run_port_in_use_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "voxgate.server.demo", "--http-port", str(port),
             "--sip-port", "0"],
            capture_output=True, env=clean_env(), cwd=tmp_path, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.decode()
    lines = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(port) in lines[0] and "--http-port" in lines[0]
