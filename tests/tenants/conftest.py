"""A real embedded Redis per test, under the test's own temporary directory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxgate.tenants.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(redis_url=None, data_dir=tmp_path, ping_interval=0.2)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)
