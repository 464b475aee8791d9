"""What the operating system lets us enforce on speech workers, and how we do it.

At start-up :func:`detect` probes the host once. cgroup v2 (``memory.max``,
``cpu.max``) is used only when the unified hierarchy is mounted *and* we may
create a child group in it; otherwise each limit falls back to what an
unprivileged process can do, and :meth:`HostLimits.describe` says exactly which
mechanism holds which quota — ``/system/status`` shows that, never more.

Fallbacks (no writable cgroup v2):

- memory: ``RLIMIT_AS`` caps *virtual* address space.  A worker with Whisper
  and Piper loaded maps ~1.2 GB more than it touches (thread stacks, arenas,
  mmapped model files), so the cap is ``memory_mb`` plus a measured virtual
  headroom.  The resident size is held to ``memory_mb`` by the supervisor's
  RSS watchdog, which kills a worker that goes over (checked every health
  ping), so breaching the quota costs that worker and its calls only.
- CPU: workers run at a higher ``nice`` than the media core, and
  :class:`CpuThrottle` (a token bucket over measured CPU time) stops a
  tenant's workers with ``SIGSTOP`` for just long enough to bring their share
  back to ``cpu_percent`` (100 = one core), then ``SIGCONT``.
- ``RLIMIT_NOFILE`` bounds open files; ``RLIMIT_CORE`` = 0 means a crash never
  writes a core dump (which could hold a caller's audio).

Limits are set from the parent with ``prlimit``/``setpriority`` right after the
child is spawned, so nothing runs between ``fork`` and ``exec``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import uuid
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "CpuThrottle",
    "HostLimits",
    "LimitsError",
    "WorkerLimits",
    "apply_to_pid",
    "detect",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_NICE = 5
DEFAULT_NOFILE = 1024
VIRTUAL_HEADROOM_MB = 2048
"""Address space a loaded worker maps beyond what it touches (measured ~1.2 GB) plus margin."""


class LimitsError(Exception):
    """A limit could not be applied to a worker (the process is gone, or EPERM)."""


class WorkerLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The OS limits one tenant's workers run under (derived from its quotas)."""

    memory_mb: int
    cpu_percent: int
    nofile: int = DEFAULT_NOFILE
    nice: int = DEFAULT_NICE
    virtual_headroom_mb: int = VIRTUAL_HEADROOM_MB

    @property
    def address_space_bytes(self) -> int:
        return (self.memory_mb + self.virtual_headroom_mb) * 1024 * 1024

    @property
    def rss_limit_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


class HostLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Result of :func:`detect`: which mechanism this host allows for each limit."""

    cgroup_v2: bool
    cgroup_v2_writable: bool
    # Workers are not placed into cgroups yet even where the host would allow it,
    # so the mechanisms below are the fallbacks, which are what actually runs.
    cgroup_v2_used: bool = False
    rlimit_as: bool
    rlimit_nofile: bool
    rlimit_core: bool
    setpriority: bool
    sigstop_throttle: bool
    cpu_count: int

    @property
    def memory_mechanism(self) -> str:
        if self.cgroup_v2_used:
            return "cgroup_v2_memory_max"
        return "rlimit_as+rss_watchdog" if self.rlimit_as else "rss_watchdog"

    @property
    def cpu_mechanism(self) -> str:
        if self.cgroup_v2_used:
            return "cgroup_v2_cpu_max"
        parts = [
            name
            for name, ok in (
                ("nice", self.setpriority),
                ("sigstop_throttle", self.sigstop_throttle),
            )
            if ok
        ]
        return "+".join(parts) or "none"

    def describe(self) -> dict[str, Any]:
        """The ``limits.workers`` section of ``/system/status``: what is really enforced."""
        return {
            "cgroup_v2": self.cgroup_v2,
            "cgroup_v2_writable": self.cgroup_v2_writable,
            "cgroup_v2_used": self.cgroup_v2_used,
            "memory": {
                "mechanism": self.memory_mechanism,
                "enforced": True,
                "detail": (
                    "RSS above memory_mb kills the worker (checked every health ping); "
                    "RLIMIT_AS caps virtual memory at memory_mb + "
                    f"{VIRTUAL_HEADROOM_MB} MB"
                    if not self.cgroup_v2_used
                    else "memory.max = memory_mb"
                ),
            },
            "cpu": {
                "mechanism": self.cpu_mechanism,
                "enforced": self.cgroup_v2_used or self.sigstop_throttle,
                "detail": (
                    "tenant workers stopped (SIGSTOP/SIGCONT) when their measured CPU "
                    "share exceeds cpu_percent (100 = one core); nice "
                    f"+{DEFAULT_NICE} below the media core"
                    if not self.cgroup_v2_used
                    else "cpu.max = cpu_percent"
                ),
            },
            "open_files": {
                "mechanism": "rlimit_nofile",
                "enforced": self.rlimit_nofile,
                "value": DEFAULT_NOFILE,
            },
            "core_dumps": {"mechanism": "rlimit_core=0", "enforced": self.rlimit_core},
            "cpu_count": self.cpu_count,
        }


def _cgroup_v2_writable(root: Path) -> tuple[bool, bool]:
    """(unified hierarchy mounted at ``root``, we may create a child group there)."""
    controllers = root / "cgroup.controllers"
    if not controllers.is_file():
        return False, False
    probe = root / f"voxgate-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return True, False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True, True


def detect(cgroup_root: Path = CGROUP_ROOT) -> HostLimits:
    """Probe once at start-up (a few syscalls; no limit is changed here)."""
    v2, writable = _cgroup_v2_writable(cgroup_root)

    def has_rlimit(name: str) -> bool:
        which = getattr(resource, name, None)
        if which is None:
            return False
        try:
            resource.getrlimit(which)
        except (OSError, ValueError):
            return False
        return hasattr(resource, "prlimit")

    return HostLimits(
        cgroup_v2=v2,
        cgroup_v2_writable=writable,
        rlimit_as=has_rlimit("RLIMIT_AS"),
        rlimit_nofile=has_rlimit("RLIMIT_NOFILE"),
        rlimit_core=has_rlimit("RLIMIT_CORE"),
        setpriority=hasattr(os, "setpriority"),
        sigstop_throttle=hasattr(os, "kill") and os.name == "posix",
        cpu_count=os.cpu_count() or 1,
    )


def apply_to_pid(pid: int, limits: WorkerLimits, host: HostLimits) -> None:
    """Set every limit the host allows on the freshly spawned worker ``pid``."""

    def lower(which: int, value: int) -> None:
        _soft, hard = resource.prlimit(pid, which)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.prlimit(pid, which, (cap, cap))

    try:
        if host.rlimit_core:
            lower(resource.RLIMIT_CORE, 0)
        if host.rlimit_nofile:
            lower(resource.RLIMIT_NOFILE, limits.nofile)
        if host.rlimit_as:
            lower(resource.RLIMIT_AS, limits.address_space_bytes)
        if host.setpriority and limits.nice:
            current = os.getpriority(os.PRIO_PROCESS, pid)
            os.setpriority(os.PRIO_PROCESS, pid, max(current, limits.nice))
    except ProcessLookupError as exc:
        raise LimitsError(f"worker {pid} exited before its limits were set") from exc
    except (OSError, ValueError) as exc:
        raise LimitsError(f"cannot limit worker {pid}: {exc}") from exc


class CpuThrottle:
    """Sans-IO CPU share limiter: a token bucket of CPU-seconds.

    Budget accrues at ``share`` CPU-seconds per wall second (``share`` = 1.0 is
    one core) up to ``burst`` seconds; measured CPU use spends it.  When the
    budget is negative, :meth:`observe` answers how long to keep the tenant's
    workers stopped so the bucket refills to zero (at most ``max_stop``, so a
    stopped worker answers pings again soon).
    """

    def __init__(self, share: float, *, burst: float = 0.25, max_stop: float = 0.2) -> None:
        if share <= 0:
            raise ValueError("CPU share must be positive")
        self.share = share
        self.burst = burst
        self.max_stop = max_stop
        self._budget = burst
        self._last_at: float | None = None
        self._last_cpu: float | None = None
        self.stopped_s = 0.0

    def observe(self, now: float, cpu_total: float) -> float:
        """Feed the tenant's total CPU seconds at ``now``; returns seconds to stop (0 = run)."""
        if self._last_at is None or self._last_cpu is None:
            self._last_at, self._last_cpu = now, cpu_total
            return 0.0
        elapsed = max(0.0, now - self._last_at)
        # A worker that exited takes its CPU time with it: never count negative use.
        used = max(0.0, cpu_total - self._last_cpu)
        self._last_at, self._last_cpu = now, cpu_total
        self._budget = min(self.burst, self._budget + elapsed * self.share - used)
        if self._budget >= 0:
            return 0.0
        stop = min(self.max_stop, -self._budget / self.share)
        self.stopped_s += stop
        return stop
