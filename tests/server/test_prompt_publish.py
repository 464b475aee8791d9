"""Publishing a flow agent renders its static prompts in a separate process (real Piper)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from voxgate.agents.flowspec import parse_flow, static_prompts
from voxgate.server.app import create_app
from voxgate.server.config import Config
from voxgate.server.services import Services
from voxgate.server.worker_agent import SPEECH

ADMIN = "prompt-publish-admin-token-0123456789"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    config = Config(data_dir=tmp_path / "data", http_port=0, admin_token=ADMIN)
    services = await Services.open(config)
    try:
        await services.admin_tokens.ensure(ADMIN)
        app = create_app(config, services)
        async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
            yield test_client
    finally:
        await services.close()


async def test_publishing_a_flow_renders_its_static_prompts(
    client: TestClient,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    created = await client.post("/system/tenants", json={"name": "Prompts"}, headers=admin)
    tenant = await created.json()
    key = {"Authorization": f"Bearer {tenant['api_key']}"}
    base = f"/tenants/{tenant['id']}/api/agents"
    response = await client.post(
        base, json={"name": "Desk", "template": "demo-receptionist"}, headers=key
    )
    assert response.status == 201
    agent = await response.json()
    publisher = client.app[SPEECH].prompts
    assert not publisher.idle.is_set()  # the build started with the publish
    await asyncio.wait_for(publisher.idle.wait(), 180)
    assert (publisher.built, publisher.failed) == (1, 0)
    flow, _ = parse_flow(agent["flow"])
    rendered = list((tmp_path / "data" / "blobs" / tenant["id"] / "prompts").rglob("*.ulaw"))
    assert len(rendered) >= len(set(static_prompts(flow)))
    assert all(path.stat().st_size > 0 and path.stat().st_size % 160 == 0 for path in rendered)

    # Renaming publishes no new flow: nothing to render.
    renamed = await client.patch(f"{base}/{agent['id']}", json={"name": "Desk 2"}, headers=key)
    assert renamed.status == 200
    assert publisher.idle.is_set() and publisher.built == 1
