"""A real app (Twilio routes, embedded Redis) with flow agents served by real speech workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from aiohttp.test_utils import TestClient, TestServer

from loadtest.twilio_caller import CallerConfig
from tests.conftest import ADMIN_TOKEN
from voxgate.agents.models import SpeechModelConfig
from voxgate.agents.stt import SpeechRecognizer
from voxgate.media.g711 import ulaw_decode
from voxgate.server.app import create_app
from voxgate.server.config import Config
from voxgate.server.services import Services
from voxgate.server.supervisor import SupervisorConfig
from voxgate.server.worker_agent import SpeechRuntime, install_flow_agents

PUBLIC_URL = "https://voice.example.com"
AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"


@dataclass
class Line:
    tenant_id: str
    agent_id: str
    number: str
    account_sid: str
    auth_token: str
    headers: dict[str, str]


@dataclass
class SpeechEnv:
    client: TestClient  # type: ignore[type-arg]
    services: Services
    speech: SpeechRuntime
    url: str
    lines: list[Line]

    def caller(self, line: Line, **options: Any) -> CallerConfig:
        return CallerConfig(
            url=self.url,
            account_sid=line.account_sid,
            auth_token=line.auth_token,
            public_url=PUBLIC_URL,
            to=line.number,
            audio_dir=str(AUDIO),
            **options,
        )


async def _line(client: TestClient, index: int, template: str) -> Line:  # type: ignore[type-arg]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = await (
        await client.post("/system/tenants", json={"name": f"t{index}"}, headers=admin)
    ).json()
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    base = f"/tenants/{created['id']}/api"
    agent = await (
        await client.post(
            f"{base}/agents", json={"name": "desk", "template": template}, headers=headers
        )
    ).json()
    number = f"+1555010{index:04d}"
    response = await client.post(
        f"{base}/numbers",
        json={"number": number, "provider": "twilio", "agent_id": agent["id"]},
        headers=headers,
    )
    assert response.status == 201, await response.text()
    sid, token = "AC" + f"{index:02d}" * 16, f"token-{index}-0123456789abcdef"
    response = await client.put(
        f"{base}/secrets/twilio", json={"account_sid": sid, "auth_token": token}, headers=headers
    )
    assert response.status == 204
    return Line(created["id"], agent["id"], number, sid, token, headers)


async def start_speech_env(
    tmp_path: Path, *, tenants: int = 1, prewarm: int = 1
) -> AsyncIterator[SpeechEnv]:
    config = Config(
        data_dir=tmp_path / "data",
        http_port=0,
        admin_token=ADMIN_TOKEN,
        public_url=PUBLIC_URL,
        drain_timeout=2.0,
    )
    services = await Services.open(config)
    try:
        await services.admin_tokens.ensure(ADMIN_TOKEN)
        app = create_app(config, services)
        speech = install_flow_agents(
            app, config=SupervisorConfig(prewarm=prewarm, max_workers_total=4)
        )
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            lines = [await _line(client, i + 1, "demo-receptionist") for i in range(tenants)]
            speech.supervisor.activate()
            for line in lines:  # what publishing does: render the static prompts off-loop
                agent = await services.agents.get(line.tenant_id, line.agent_id)
                speech.prompts.schedule(line.tenant_id, agent.flow)
            async with asyncio.timeout(120):
                await speech.supervisor.wait_prewarmed()
                await speech.prompts.idle.wait()
            yield SpeechEnv(client, services, speech, str(client.make_url("")).rstrip("/"), lines)
    finally:
        await services.close()


@pytest.fixture
async def speech_env(tmp_path: Path) -> AsyncIterator[SpeechEnv]:
    async for env in start_speech_env(tmp_path):
        yield env


@pytest.fixture(scope="session")
def transcribe() -> Callable[[bytes], str]:
    """µ-law 8 kHz agent audio -> text, with the same Whisper model the workers use."""
    recognizer = SpeechRecognizer(SpeechModelConfig())

    def run(ulaw: bytes) -> str:
        pcm = ulaw_decode(ulaw).astype(np.float32) / 32768.0
        audio16 = soxr.resample(pcm, 8000, 16000).astype(np.float32)
        return recognizer.transcribe(audio16, beam_size=5).text

    return run
