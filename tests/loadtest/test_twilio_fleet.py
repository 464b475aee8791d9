"""The lean benchmark caller against the real server's echo agent."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loadtest.twilio_caller import CallerConfig
from loadtest.twilio_fleet import encode_client_frame, run_fleet
from tests.server.test_twilio_webhook import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    NUMBER,
    PUBLIC_URL,
    TwilioEnv,
    start_env,
)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[TwilioEnv]:
    async for value in start_env(tmp_path):
        yield value


def test_client_frames_are_masked_with_a_zero_key() -> None:
    small = encode_client_frame(b"hi")
    assert small == bytes((0x81, 0x82)) + b"\0\0\0\0" + b"hi"
    medium = encode_client_frame(b"x" * 300)
    assert medium[:4] == struct.pack("!BBH", 0x81, 0xFE, 300) and medium[4:8] == b"\0" * 4
    close = encode_client_frame(struct.pack("!H", 1000), 0x8)
    assert close[0] == 0x88


async def test_fleet_streams_to_the_echo_agent_and_echoes_marks(env: TwilioEnv) -> None:
    config = CallerConfig(
        url=str(env.client.make_url("")).rstrip("/"),
        public_url=PUBLIC_URL,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        to=NUMBER,
        calls=3,
        ramp_s=0.1,
        audio=("book_appointment",),
        silence_before_s=0.0,
        duration_s=1.5,
        deadline_s=30.0,
    )
    summary = await run_fleet(config)
    assert summary.errors == []
    assert (summary.connected, summary.completed, summary.ended_by_server) == (3, 3, 0)
    assert summary.media_sent == 3 * 75
    # Everything comes back but the echo's 200 ms delay line, cut off by the hang-up.
    assert 3 * 60 <= summary.media_received <= summary.media_sent
    assert summary.marks_received >= 3 and summary.marks_echoed == summary.marks_received
    assert summary.protocol_errors == 0
    assert summary.send_lateness_ms.count > 0 and summary.jitter_ms.count > 0
    # The server saw the same calls: records carry their frame counts.
    async with asyncio.timeout(10):
        await env.runtime.control.wait_idle()  # every call's ending has been written
    page = await env.runtime.records.list(env.tenant_id)
    assert len(page.calls) == 3
    assert sum(r.frames_in for r in page.calls) == summary.media_sent
