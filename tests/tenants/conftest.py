"""A real embedded Redis per test, under the test's own temporary directory."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def frozen_startup_heap() -> Iterator[None]:
    """Keep full GC passes short so they do not trip the 50 ms loop-blocking guard.

    A gen-2 collection walks every tracked object, including everything imported
    at start-up; on a loaded CI machine that alone can take 100 ms inside a test's
    event-loop step.  Freezing the start-up heap leaves only test garbage to scan.
    """
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)
