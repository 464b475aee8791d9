"""Server lifecycle in-process: listener seam, ready file, drain hooks, failure cleanup."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from voxgate.server.config import Config
from voxgate.server.runtime import ListenError, Server
from voxgate.server.services import Services


class FakeSipListener:
    """Stands in for the SIP listeners that plug into the same seam later."""

    def __init__(self) -> None:
        self.closed = False

    @property
    def endpoints(self) -> dict[str, str]:
        return {"sip_udp": "127.0.0.1:5999", "sip_tcp": "127.0.0.1:5999"}

    async def close(self) -> None:
        self.closed = True


def config(tmp_path: Path, **extra: object) -> Config:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "http_port": 0,
        "sip_port": 0,
        "ready_file": tmp_path / "ready.json",
        "drain_timeout": 5.0,
    }
    values.update(extra)
    return Config(**values)  # type: ignore[arg-type]


async def test_ready_file_lists_every_listener_and_drain_runs(tmp_path: Path) -> None:
    sip = FakeSipListener()
    seen: list[bool] = []
    drained: list[float] = []

    async def start_sip(cfg: Config, services: Services) -> FakeSipListener:
        # the ready file must not exist before every listener is up
        seen.append(cfg.ready_file is not None and cfg.ready_file.exists())
        return sip

    async def drain(budget: float) -> None:
        drained.append(budget)

    server = Server(config(tmp_path), listeners=[start_sip], drain_hooks=[drain])
    ready = await server.start()
    assert seen == [False]
    on_disk = json.loads((tmp_path / "ready.json").read_text())
    assert on_disk["sip_udp"] == "127.0.0.1:5999" and on_disk["sip_tcp"] == "127.0.0.1:5999"
    assert on_disk["http"] == ready.http
    assert "admin_token" in on_disk  # generated on this first start
    async with aiohttp.ClientSession() as session, session.get(ready.http + "/healthz") as r:
        assert r.status == 200
    status = await server.services.status.collect()
    assert status.draining is False
    await server.stop()
    assert drained == [5.0] and sip.closed
    assert not (tmp_path / "ready.json").exists()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(ready.http + "/healthz")


async def test_drain_is_bounded_by_drain_timeout(tmp_path: Path) -> None:
    never = asyncio.Event()

    async def stuck_call(budget: float) -> None:
        await never.wait()  # a call that never ends by itself

    server = Server(config(tmp_path, drain_timeout=0.2), drain_hooks=[stuck_call])
    await server.start()
    async with asyncio.timeout(10):
        await server.stop()


async def test_port_in_use_fails_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(config(tmp_path, http_port=port))
        with pytest.raises(ListenError, match="address already in use"):
            await server.start()
    assert not (tmp_path / "data").exists()  # no embedded Redis was started for nothing


async def test_failing_listener_undoes_the_start(tmp_path: Path) -> None:
    async def broken(cfg: Config, services: Services) -> FakeSipListener:
        raise ListenError("SIP", "127.0.0.1", 5060, "address already in use")

    server = Server(config(tmp_path), listeners=[broken])
    with pytest.raises(ListenError):
        await server.start()
    assert not (tmp_path / "ready.json").exists()
    with pytest.raises(RuntimeError):
        _ = server.services  # closed again
