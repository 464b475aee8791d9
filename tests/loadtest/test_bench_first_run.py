"""The first-run benchmark's stdout reader: finds the ready line, fails clearly otherwise."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from loadtest.bench_first_run import wait_for_line


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def test_returns_the_lines_up_to_the_ready_line() -> None:
    proc = spawn("print('one'); print('two: ready here'); print('three')")
    lines = wait_for_line(proc, "ready", time.monotonic() + 30)
    assert lines == ["one", "two: ready here"]
    proc.wait()


def test_a_run_that_exits_first_is_an_error_with_its_output() -> None:
    proc = spawn("print('voxgate: error: cannot listen'); raise SystemExit(2)")
    with pytest.raises(RuntimeError, match="cannot listen"):
        wait_for_line(proc, "ready", time.monotonic() + 30)


def test_a_run_that_never_gets_ready_times_out() -> None:
    proc = spawn("import sys; print('starting'); sys.stdout.flush(); sys.stdin.read()")
    try:
        with pytest.raises(TimeoutError, match="starting"):
            wait_for_line(proc, "ready", time.monotonic() + 0.5)
    finally:
        proc.kill()
        proc.wait()
