"""A newcomer's first run, timed: ``git clone`` → ``make run`` serving, and ``make test``.

    python -m loadtest.bench_first_run [--repo URL_OR_PATH] [--pip-cache DIR] [--test]

Clones ``--repo`` (default: this checkout's ``HEAD``) into an empty temporary
folder, runs ``make run`` there exactly as the README says (default flags: it
serves on 8080 and SIP on 5060, so nothing else may hold those ports) and
times the clone until the server's next-steps block is printed; then checks
``/healthz``, stops it with Ctrl-C (SIGINT to its process group, as a
terminal does) and checks that no process of the run is left. With
``--test`` it then times ``make test`` in the same clone. ``--pip-cache``
selects the pip cache (pass an empty folder for a cold run; the default is
pip's own, usually warm). Bounded: every step has a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
READY_LINE = "the next `make run` resumes"
SERVE_DEADLINE = 1800.0
TEST_DEADLINE = 3600.0


def wait_for_line(proc: subprocess.Popen[bytes], needle: str, deadline: float) -> list[str]:
    """Stdout lines of ``proc`` up to the first containing ``needle``."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer, lines = b"", []
    while time.monotonic() < deadline:
        if not selector.select(max(0.0, deadline - time.monotonic())):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"make run exited ({proc.wait()}): {lines[-20:]}")
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            lines.append(line.decode(errors="replace"))
            if needle in lines[-1]:
                return lines
    raise TimeoutError(f"no {needle!r} within the deadline: {lines[-20:]}")


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(REPO))
    parser.add_argument("--pip-cache", help="pip cache folder (empty = a cold run)")
    parser.add_argument("--test", action="store_true", help="also time `make test`")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXGATE_", "VIRTUAL_ENV"))}
    if args.pip_cache:
        env["PIP_CACHE_DIR"] = args.pip_cache
    result: dict[str, object] = {"repo": args.repo, "pip_cache": args.pip_cache or "default"}
    with tempfile.TemporaryDirectory(prefix="vg-first-run-") as folder:
        started = time.monotonic()
        subprocess.run(
            ["git", "clone", "-q", args.repo, "voxgate"], cwd=folder, check=True, timeout=600
        )
        clone = Path(folder) / "voxgate"
        run = subprocess.Popen(
            ["make", "run"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            lines = wait_for_line(run, READY_LINE, time.monotonic() + SERVE_DEADLINE)
            result["clone_to_serving_s"] = round(time.monotonic() - started, 1)
            base = next(line.split()[-1] for line in lines if "listening on" in line)
            with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
                result["healthz"] = response.status
            family = psutil.Process(run.pid).children(recursive=True)
            result["processes"] = len(family)
            os.killpg(run.pid, signal.SIGINT)
            result["make_run_exit"] = run.wait(timeout=120)
            result["left_running"] = [p.pid for p in family if alive(p)]
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
        if args.test:
            started = time.monotonic()
            test = subprocess.run(
                ["make", "test"], cwd=clone, env=env, capture_output=True, timeout=TEST_DEADLINE
            )
            result["make_test_s"] = round(time.monotonic() - started, 1)
            result["make_test_rc"] = test.returncode
            tail = test.stdout.decode(errors="replace").strip().splitlines()[-3:]
            result["make_test_tail"] = tail
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
