"""Server lifecycle: open state, start every listener, announce readiness, drain, stop.

Start-up order is fixed so the ready file never lies: store → master key →
admin token → HTTP listener → every extra listener (SIP UDP/TCP once they
exist, registered as :class:`ListenerHook`) → ready file.  Shutdown reverses
it: refuse new calls and run drain hooks for live calls (bounded by
``drain_timeout``; HTTP still answers, with fallbacks), then close HTTP,
listeners, store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
from aiohttp import web

from voxgate.server.app import RouteRegistrar, create_app
from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.services import Services

log = logging.getLogger("voxgate.server")


class ListenError(Exception):
    """A listener could not bind its address (port in use, bad host, no permission)."""

    # The flag that picks each listener's port, named in the message so the fix is obvious.
    FLAGS = {"HTTP": "--http-port", "SIP": "--sip-port"}

    def __init__(self, what: str, host: str, port: int, reason: str) -> None:
        hint = ""
        if reason == "address already in use" and what in self.FLAGS:
            hint = f" (choose another with {self.FLAGS[what]}, or 0 for any free port)"
        super().__init__(f"cannot listen for {what} on {host}:{port}: {reason}{hint}")
        self.what = what
        self.host = host
        self.port = port
        self.reason = reason


def bind_tcp(host: str, port: int, what: str) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (0 = any free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(what, host, port, f"cannot resolve host ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio does on Unix: allow rebinding right after a restart (TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ListenError(what, host, port, reason or str(exc)) from None
    return sock


class Listener(Protocol):
    """A started listener: what it adds to the ready file, and how to stop it."""

    @property
    def endpoints(self) -> dict[str, str]:
        """Ready-file entries, e.g. ``{"sip_udp": "127.0.0.1:5060"}``."""
        ...

    async def close(self) -> None: ...


# Starts one listener once HTTP is up; raises ListenError when it cannot bind.
ListenerHook = Callable[[Config, Services], Awaitable[Listener]]
# Stops new work and waits for live work (calls) to finish, within the given seconds.
DrainHook = Callable[[float], Awaitable[None]]
# Runs after everything listens, before the ready file is written (e.g. demo seeding).
StartedHook = Callable[["Server"], Awaitable[None]]


class ReadyInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Content of ``--ready-file``; ``admin_token`` only when generated on this start."""

    http: str
    sip_udp: str | None = None
    sip_tcp: str | None = None
    admin_token: str | None = None


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_ready_file(path: Path, info: ReadyInfo) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".ready-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(info))
        # It may carry the admin token: readable by the owner only.
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


class Server:
    """One ``voxgate serve`` process: call :meth:`start`, then :meth:`stop` (or :meth:`run`)."""

    def __init__(
        self,
        config: Config,
        *,
        listeners: Sequence[ListenerHook] = (),
        drain_hooks: Sequence[DrainHook] = (),
        extra_routes: Sequence[RouteRegistrar] = (),
        on_started: Sequence[StartedHook] = (),
    ) -> None:
        self.config = config
        # SIP UDP/TCP listeners plug in here when they exist; each reports its
        # ready-file keys (``sip_udp``, ``sip_tcp``).
        self.listener_hooks = list(listeners)
        self.drain_hooks = list(drain_hooks)
        self.extra_routes = list(extra_routes)
        self.on_started = list(on_started)
        self._services: Services | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._listeners: list[Listener] = []
        self.ready: ReadyInfo | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("server not started")
        return self._services

    @property
    def app(self) -> web.Application:
        """The HTTP application; available to listener hooks (HTTP starts first)."""
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._runner.app

    async def start(self) -> ReadyInfo:
        """Bring everything up; on any failure, undo what was started and re-raise."""
        config = self.config
        if config.ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                config.ready_file.unlink()  # a stale file must not announce this start
        # Bind the HTTP port before anything else: a port in use fails fast,
        # before an embedded Redis is started only to be stopped again.
        http_socket = bind_tcp(config.host, config.http_port, "HTTP")
        try:
            self._services = await Services.open(config)
            generated = await self._services.admin_tokens.ensure(config.admin_token)
            http = await self._start_http(http_socket)
            endpoints: dict[str, str] = {}
            for hook in self.listener_hooks:
                listener = await hook(config, self._services)
                self._listeners.append(listener)
                endpoints.update(listener.endpoints)
            self.ready = ReadyInfo(
                http=http,
                sip_udp=endpoints.get("sip_udp"),
                sip_tcp=endpoints.get("sip_tcp"),
                admin_token=generated,
            )
            for started in self.on_started:
                await started(self)
            # Everything loaded at start-up lives for the whole run: keep it out of
            # the collector's scans so full collections stay short on the media loop.
            gc.collect()
            gc.freeze()
            if config.ready_file is not None:
                await asyncio.to_thread(write_ready_file, config.ready_file, self.ready)
        except BaseException:
            if self._site is None:
                http_socket.close()  # never handed to the HTTP server
            await self._teardown()
            raise
        log.info("voxgate ready on %s", self.ready.http)
        return self.ready

    async def _start_http(self, sock: socket.socket) -> str:
        config = self.config
        app = create_app(config, self.services, extra_routes=self.extra_routes)
        self.drain_hooks.append(app[CALLS].control.drain)  # live calls finish first
        # aiohttp's own access log is replaced by our JSON access middleware.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=max(config.drain_timeout, 0.1)
        )
        await self._runner.setup()
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        port = int(sock.getsockname()[1])
        return f"http://{_hostport(config.host, port)}"

    async def stop(self) -> None:
        """Graceful stop: refuse new work, let live calls finish (bounded), close all."""
        if self._services is not None:
            self._services.status.draining = True
        # HTTP keeps listening while calls drain: a Twilio webhook arriving now
        # must get the fallback TwiML (not a refused connection), and the API
        # and status stay readable.  New calls are refused by the drain hooks.
        if self.drain_hooks:
            timeout = self.config.drain_timeout
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(hook(timeout) for hook in self.drain_hooks))
            except TimeoutError:
                log.warning("drain did not finish within %.1f s; stopping anyway", timeout)
        if self._site is not None:
            await self._site.stop()  # no new HTTP connections from here on
            self._site = None
        await self._teardown()

    async def _teardown(self) -> None:
        for listener in reversed(self._listeners):
            try:
                await listener.close()
            except Exception:
                log.exception("closing a listener failed")
        self._listeners.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        if self._services is not None:
            await self._services.close()
            self._services = None
        if self.config.ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.config.ready_file.unlink()

    async def run(self, announce: Callable[[ReadyInfo], None] | None = None) -> None:
        """Start, wait for SIGTERM/SIGINT, then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            ready = await self.start()
            if announce is not None:
                announce(ready)
            await stop.wait()
            log.info("signal received: draining (up to %.1f s)", self.config.drain_timeout)
            await self.stop()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
