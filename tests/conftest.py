"""Shared fixtures: loop-blocking guard for every async test, and a running server.

The server fixtures run the real app in-process on a loopback port 0 with an
embedded Redis under ``tmp_path``, so API tests exercise real storage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

# Imported at collection time: first imports inside a fixture would block the loop.
from voxgate.server.app import create_app
from voxgate.server.config import Config
from voxgate.server.services import Services

# A callback that holds the loop longer than this stalls every call's 20 ms frames.
BLOCK_LIMIT = float(os.environ.get("VOXGATE_TEST_LOOP_BLOCK_MS", "50")) / 1000
_SLOW = re.compile(r"^Executing .* took (?P<seconds>[0-9.]+) seconds$", re.S)


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if _SLOW.match(text):
            self.found.append(text)


@pytest.fixture(autouse=True)
async def no_loop_blocking(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail the test when any callback blocks the event loop longer than BLOCK_LIMIT.

    asyncio's debug mode times every callback and logs the slow ones; we turn
    those log lines into a test failure.  Mark a test ``allow_blocking`` to opt out.
    """
    if request.node.get_closest_marker("allow_blocking"):
        yield
        return
    loop = asyncio.get_running_loop()
    was_debug, was_limit = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCK_LIMIT
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        loop.set_debug(was_debug)
        loop.slow_callback_duration = was_limit
    if handler.found:
        pytest.fail("event loop blocked:\n" + "\n".join(handler.found[:5]), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_blocking: do not fail the test when the event loop is blocked"
    )


TESTDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata"


@dataclass
class ApiServer:
    """A running app plus what tests need to talk to it."""

    client: TestClient  # type: ignore[type-arg]
    admin_token: str
    data_dir: Path
    services: Services

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    """The full app on an embedded Redis in ``tmp_path``, admin token preset."""
    config = Config(data_dir=tmp_path / "data", http_port=0, admin_token=ADMIN_TOKEN)
    services = await Services.open(config)
    try:
        await services.admin_tokens.ensure(ADMIN_TOKEN)
        app = create_app(config, services)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield ApiServer(
                client=client,
                admin_token=ADMIN_TOKEN,
                data_dir=config.data_dir,
                services=services,
            )
    finally:
        await services.close()
