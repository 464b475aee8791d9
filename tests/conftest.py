"""Shared fixtures: loop-blocking guard for every async test, and a running server.

The server fixtures run the real app in-process on a loopback port 0 with an
embedded Redis under ``tmp_path``, so API tests exercise real storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

# Imported at collection time: first imports inside a fixture would block the loop.
from voxgate.server.app import create_app
from voxgate.server.config import Config
from voxgate.server.services import Services
from voxgate.tenants.store import Store

# A callback that holds the loop longer than this stalls every call's 20 ms frames.
BLOCK_LIMIT = float(os.environ.get("VOXGATE_TEST_LOOP_BLOCK_MS", "50")) / 1000


class _RunQueueClock:
    """Time this thread spent runnable but not running (preempted by other processes).

    Read from ``/proc/thread-self/schedstat``; subtracting it from a callback's
    wall time leaves the time the callback itself held the loop, so a busy
    machine does not make a well-behaved test fail.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> float:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            try:
                fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                fd = -1
            self._local.fd = fd
        if fd < 0:
            return 0.0
        fields = os.pread(fd, 128, 0).split()
        return int(fields[1]) / 1e9


def _describe(handle: asyncio.Handle) -> str:
    """Name the coroutine behind a task step, not just the wrapper object."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        return f"task {owner.get_name()} running {owner.get_coro()!r}"
    return repr(handle)


class _GcClock:
    """Total seconds spent in the cyclic garbage collector since installed."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


@contextlib.contextmanager
def loop_block_guard(limit: float = BLOCK_LIMIT) -> Iterator[list[str]]:
    """Record every event-loop callback that holds the loop longer than ``limit``.

    Every ``Handle._run`` (task steps included) is timed.  Not counted: time the
    thread spent preempted by other processes, and garbage-collector pauses
    (their length depends on everything the test process has allocated, not
    on the code under test).  What remains is the callback's own work or a
    blocking call.
    """
    original = asyncio.events.Handle._run
    run_queue = _RunQueueClock()
    collector = _GcClock()
    slow: list[str] = []

    def timed_run(handle: asyncio.Handle) -> None:
        started, queued, collected = time.perf_counter(), run_queue(), collector.total
        try:
            original(handle)
        finally:
            held = time.perf_counter() - started
            if held > limit:
                held -= run_queue() - queued
                held -= collector.total - collected
                if held > limit:
                    slow.append(f"{held * 1000:.0f} ms in {_describe(handle)}")

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    gc.callbacks.append(collector)
    try:
        yield slow
    finally:
        gc.callbacks.remove(collector)
        asyncio.events.Handle._run = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def no_loop_blocking(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when the event loop is blocked longer than BLOCK_LIMIT.

    Mark a test ``allow_blocking`` to opt out.
    """
    if request.node.get_closest_marker("allow_blocking"):
        yield
        return
    with loop_block_guard() as slow:
        yield
    if slow:
        pytest.fail("event loop blocked:\n" + "\n".join(slow[:5]), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_blocking: do not fail the test when the event loop is blocked"
    )


TESTDATA = Path(__file__).resolve().parents[1] / "tests" / "data"


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
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real embedded Redis under the test's own temporary directory."""
    opened = await Store.open(redis_url=None, data_dir=tmp_path, ping_interval=0.2)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    """The full app on an embedded Redis in ``tmp_path``, admin token preset."""
    # Prompt rendering (a Piper process per published flow) has its own test.
    config = Config(
        data_dir=tmp_path / "data", http_port=0, admin_token=ADMIN_TOKEN, render_prompts=False
    )
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
