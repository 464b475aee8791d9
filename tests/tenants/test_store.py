from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from voxgate.tenants.errors import StoreUnavailable
from voxgate.tenants.store import Store

WAIT = 20.0


async def test_embedded_store_round_trip_and_persists(tmp_path: Path) -> None:
    store = await Store.open(redis_url=None, data_dir=tmp_path)
    assert store.healthy
    pid = store.embedded_pid
    assert pid is not None
    await store.redis.set(b"k", b"v")
    await store.close()
    assert not store.healthy
    # The server process is gone after close.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "redis" / "appendonly.aof").exists()

    reopened = await Store.open(redis_url=None, data_dir=tmp_path)
    try:
        assert await reopened.redis.get(b"k") == b"v"
    finally:
        await reopened.close()


async def test_reconnects_after_embedded_server_is_killed(store: Store) -> None:
    await store.redis.set(b"before", b"1")
    outages = store.outages
    pid = store.embedded_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    await asyncio.wait_for(store.wait_until(lambda: store.outages > outages), WAIT)
    await asyncio.wait_for(store.wait_until(lambda: store.healthy), WAIT)
    assert store.restarts >= 1
    assert store.embedded_pid not in (None, pid)
    await store.redis.set(b"after", b"2")
    assert await store.redis.get(b"after") == b"2"


async def test_guard_turns_connection_loss_into_store_unavailable(store: Store) -> None:
    pid = store.embedded_pid
    assert pid is not None
    # Stop the monitor from restarting so the outage is observable to commands.
    monitor = store._monitor_task
    assert monitor is not None
    monitor.cancel()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreUnavailable):
        async with store.guard():
            for _ in range(50):
                await store.redis.ping()


async def test_external_url_does_not_own_the_server(store: Store, tmp_path: Path) -> None:
    assert store._embedded is not None
    url = f"unix://{store._embedded.socket_path}"
    external = await Store.open(redis_url=url, data_dir=tmp_path / "unused")
    assert external.embedded_pid is None
    await external.redis.set(b"x", b"1")
    await external.close()
    assert await store.redis.get(b"x") == b"1"


async def test_unreachable_url_fails_with_typed_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        await Store.open(
            redis_url=f"unix://{tmp_path}/missing.sock",
            data_dir=tmp_path,
            connect_timeout=0.3,
        )


async def test_second_store_on_same_data_dir_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="another running voxgate"):
        await Store.open(redis_url=None, data_dir=tmp_path)


async def test_more_concurrent_commands_than_pool_connections_all_succeed(store: Store) -> None:
    # Each command in flight holds a pooled connection; past the pool's size a
    # command must wait for a free one rather than fail as if Redis were down.
    from voxgate.tenants.store import POOL_CONNECTIONS

    count = POOL_CONNECTIONS * 4
    await asyncio.wait_for(
        asyncio.gather(*(store.redis.incr(b"counter") for _ in range(count))), WAIT
    )
    assert int(await store.redis.get(b"counter") or 0) == count
    assert store.healthy and store.outages == 0


_OWNER = """
import asyncio, sys
from pathlib import Path
from voxgate.tenants.store import Store

async def main() -> None:
    store = await Store.open(redis_url=None, data_dir=Path(sys.argv[1]))
    print(store.embedded_pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_embedded_redis_does_not_outlive_a_killed_server(tmp_path: Path) -> None:
    import select
    import subprocess
    import sys

    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        redis_pid = int(owner.stdout.readline())
        watcher = os.pidfd_open(redis_pid)
    finally:
        owner.kill()
        owner.wait(10)
    try:
        # The pidfd becomes readable when the process exits: no polling loop.
        readable, _, _ = select.select([watcher], [], [], WAIT)
        assert readable, "redis-server survived its killed owner"
    finally:
        os.close(watcher)
