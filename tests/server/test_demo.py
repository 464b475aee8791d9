"""``make run`` demo seeding: a demo tenant and agent, created once, key shown once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.server.test_secrets_at_rest import files_containing
from voxgate.server.config import Config
from voxgate.server.demo import DEMO_AGENT, DEMO_TENANT, seed_demo
from voxgate.server.runtime import Server


async def test_demo_is_seeded_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = Config(data_dir=tmp_path / "data", http_port=0, sip_port=0)
    for attempt in range(2):
        server = Server(config, on_started=[seed_demo])
        ready = await server.start()
        try:
            tenants = await server.services.registry.list()
            assert [t.name for t in tenants] == [DEMO_TENANT]
            agents = await server.services.agents.list(tenants[0].id)
            assert [(a.name, a.template, a.kind) for a in agents] == [
                (DEMO_AGENT, "demo-receptionist", "flow")
            ]
        finally:
            await server.stop()
        out = capsys.readouterr().out
        assert f"Console: {ready.http}/console/" in out
        assert ("API key (shown once" in out) is (attempt == 0)
        if attempt == 0:
            key = out.split("stored hashed): ")[1].split()[0]
            assert key.startswith("vg_")
    assert await asyncio.to_thread(files_containing, tmp_path, [key.encode()]) == []
