"""Host limit detection, limits applied to a real child, and the CPU share throttle."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from voxgate.server.os_limits import CpuThrottle, LimitsError, WorkerLimits, apply_to_pid, detect


def test_detect_reports_only_mechanisms_in_use(tmp_path: Path) -> None:
    host = detect(tmp_path)  # no cgroup.controllers here: no cgroup v2
    assert not host.cgroup_v2 and not host.cgroup_v2_used
    described = host.describe()
    assert described["memory"]["mechanism"] == "rlimit_as+rss_watchdog"
    assert "sigstop_throttle" in described["cpu"]["mechanism"]
    assert described["core_dumps"]["enforced"] is True


def test_detect_unified_hierarchy_not_writable(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    tmp_path.chmod(0o555)
    try:
        host = detect(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert host.cgroup_v2
    # Even where writable, workers are not put in cgroups yet: never claimed.
    assert host.describe()["memory"]["mechanism"] != "cgroup_v2_memory_max"


def test_limits_are_applied_to_a_child() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        limits = WorkerLimits(memory_mb=512, cpu_percent=50, nofile=256, nice=7)
        apply_to_pid(child.pid, limits, detect())
        assert resource.prlimit(child.pid, resource.RLIMIT_CORE) == (0, 0)
        assert resource.prlimit(child.pid, resource.RLIMIT_NOFILE)[0] == 256
        assert resource.prlimit(child.pid, resource.RLIMIT_AS)[0] == limits.address_space_bytes

        assert os.getpriority(os.PRIO_PROCESS, child.pid) >= 7
    finally:
        child.kill()
        child.wait()
    with pytest.raises(LimitsError):
        apply_to_pid(child.pid, limits, detect())


def test_throttle_holds_a_busy_tenant_to_its_share() -> None:
    throttle = CpuThrottle(0.5, burst=0.1, max_stop=0.2)
    now, cpu, ran = 0.0, 0.0, 0.0
    assert throttle.observe(now, cpu) == 0.0
    # A worker that would use a full core, stopped whenever the throttle says so.
    for _ in range(2000):
        now += 0.05
        cpu += 0.05
        ran += 0.05
        stop = throttle.observe(now, cpu)
        if stop:
            now += stop  # stopped: wall time passes, no CPU used
    share = cpu / now
    assert 0.45 <= share <= 0.55


def test_throttle_leaves_a_light_tenant_alone_and_ignores_exited_workers() -> None:
    throttle = CpuThrottle(1.0)
    throttle.observe(0.0, 10.0)
    assert throttle.observe(1.0, 10.3) == 0.0
    assert throttle.observe(2.0, 2.0) == 0.0  # a worker exited: total went down
    assert throttle.stopped_s == 0.0
    with pytest.raises(ValueError):
        CpuThrottle(0)
