"""The Redis connection every control-plane service shares, and its health.

``Store.open`` either starts the embedded Redis under ``<data_dir>/redis`` or
connects to an external URL.  A background task pings Redis; when it stops
answering, ``healthy`` turns false, an embedded server that died is restarted
on the same files, and pings back off exponentially until Redis answers again.
Service calls run inside :meth:`Store.guard`, which turns connection failures
into :class:`StoreUnavailable` so callers answer 503 instead of crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, RedisError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voxgate.tenants import keyspace
from voxgate.tenants.embedded import EmbeddedRedis
from voxgate.tenants.errors import Conflict, NotFound, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)


# Enough connections for hundreds of calls' record writes at once; past that a
# command waits for a free connection (bounded) instead of failing like an outage.
POOL_CONNECTIONS = 256
POOL_WAIT = 5.0


def _client(*, url: str | None, socket_path: Path | None) -> aioredis.Redis:
    # A couple of quick retries absorb the one broken pooled connection left
    # after a Redis restart; longer outages are the monitor's business.
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.01), 2)
    retry_on: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError]
    options: dict[str, Any] = {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "retry": retry,
        "retry_on_error": retry_on,
    }
    pool: aioredis.BlockingConnectionPool
    if url is not None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_CONNECTIONS, timeout=POOL_WAIT, **options
        )
    else:
        pool = aioredis.BlockingConnectionPool(
            connection_class=UnixDomainSocketConnection,
            path=str(socket_path),
            max_connections=POOL_CONNECTIONS,
            timeout=POOL_WAIT,
            **options,
        )
    return aioredis.Redis(connection_pool=pool, decode_responses=False)


class Store:
    """Shared Redis client plus health tracking; create with :meth:`open`."""

    redis: aioredis.Redis

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        embedded: EmbeddedRedis | None,
        ping_interval: float,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        self.redis = client
        self._embedded = embedded
        self._ping_interval = ping_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._healthy = True
        self._outages = 0
        self._restarts = 0
        self._changed = asyncio.Condition()
        self._kick = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        *,
        redis_url: str | None,
        data_dir: Path,
        ping_interval: float = 1.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        connect_timeout: float = 15.0,
    ) -> Store:
        """Start the embedded Redis (``redis_url`` None) or connect to ``redis_url``.

        Raises :class:`StoreUnavailable` if Redis does not answer within
        ``connect_timeout`` seconds.
        """
        embedded: EmbeddedRedis | None = None
        if redis_url is None:
            embedded = EmbeddedRedis(data_dir / "redis")
            await embedded.start()
            client = _client(url=None, socket_path=embedded.socket_path)
        else:
            try:
                client = _client(url=redis_url, socket_path=None)
            except ValueError as exc:
                raise StoreUnavailable(f"bad redis url: {exc}") from None
        store = cls(
            client,
            embedded=embedded,
            ping_interval=ping_interval,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        if embedded is not None:
            embedded.on_exit = store._kick.set
        try:
            await store._first_contact(connect_timeout)
        except BaseException:
            await store.close()
            raise
        store._monitor_task = asyncio.get_running_loop().create_task(
            store._monitor(), name="voxgate-store-monitor"
        )
        return store

    async def _first_contact(self, limit: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        delay = self._backoff_initial
        while True:
            if await self._probe():
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreUnavailable(f"redis did not answer within {limit:.0f} s")
            log.info("redis not reachable yet; retrying in %.2f s", delay)
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, self._backoff_max)

    @property
    def healthy(self) -> bool:
        """False while Redis does not answer; /healthz reports degraded then."""
        return self._healthy

    @property
    def outages(self) -> int:
        """How many times health went from good to bad since open."""
        return self._outages

    @property
    def restarts(self) -> int:
        """How many times the embedded server was restarted after dying."""
        return self._restarts

    @property
    def embedded_pid(self) -> int | None:
        """Pid of the embedded Redis while it runs; None with an external Redis."""
        return None if self._embedded is None else self._embedded.pid

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked on every health change."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run Redis commands; connection trouble becomes :class:`StoreUnavailable`."""
        try:
            yield
        except _UNAVAILABLE as exc:
            self._kick.set()
            raise StoreUnavailable(f"redis unavailable: {exc}") from exc

    async def optimistic(
        self,
        keys: Sequence[str],
        attempt: Callable[[Pipeline], Awaitable[T]],
        *,
        tries: int = 16,
    ) -> T:
        """Check-and-set: WATCH ``keys``, let ``attempt`` read, then queue writes after
        ``pipe.multi()``; re-run when a watched key changed meanwhile.

        ``attempt`` may raise a TenantsError to abort without writing.
        """
        async with self.guard(), self.redis.pipeline(transaction=True) as pipe:
            for _ in range(tries):
                try:
                    await pipe.watch(*keys)
                    result = await attempt(pipe)
                    await pipe.execute()
                    return result
                except WatchError:
                    continue  # execute() already reset the pipeline
        raise Conflict("the object changed concurrently too often; retry")

    async def _probe(self) -> bool:
        # asyncio.timeout, not wait_for: no extra task whose failure could go
        # unretrieved when the monitor is cancelled mid-ping.
        try:
            async with asyncio.timeout(2.0):
                return bool(await self.redis.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def _set_health(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        if healthy:
            log.info("redis reachable again")
        elif not self._closed:  # closing on purpose is not an outage
            self._outages += 1
            log.warning("redis unreachable; reconnecting with backoff")
        async with self._changed:
            self._changed.notify_all()

    async def _wait_kick(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), seconds)
        self._kick.clear()

    async def _monitor(self) -> None:
        backoff = self._backoff_initial
        while not self._closed:
            if await self._probe():
                await self._set_health(True)
                backoff = self._backoff_initial
                await self._wait_kick(self._ping_interval)
                continue
            await self._set_health(False)
            embedded = self._embedded
            if embedded is not None and not embedded.running:
                try:
                    await embedded.start()
                except Exception:
                    log.exception("restarting embedded redis failed")
                else:
                    self._restarts += 1
                    continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    async def close(self) -> None:
        """Stop pinging, close connections, and stop the embedded server if we started it."""
        if self._closed:
            return
        self._closed = True
        task, self._monitor_task = self._monitor_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
        if self._embedded is not None:
            await self._embedded.stop()
        await self._set_health(False)


async def require_tenant(store: Store, tenant_id: str) -> None:
    """Raise ``NotFound`` unless the tenant's record exists."""
    async with store.guard():
        exists = await store.redis.exists(keyspace.tenant_key(tenant_id, "tenant"))
    if not exists:
        raise NotFound(f"tenant {tenant_id!r} not found")


def to_bytes(value: object) -> bytes:
    """Narrow a redis-py reply (typed loosely) to bytes; the client never decodes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"unexpected redis reply type {type(value).__name__}")


def start_writes(pipe: Pipeline) -> None:
    """Inside :meth:`Store.optimistic`: reads are done, queue the writes from here on."""
    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves multi() unannotated
