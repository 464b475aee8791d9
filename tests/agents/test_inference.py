"""The per-worker inference scheduler: priorities, skipped partials, bounds, shutdown."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

from voxgate.agents.inference import (
    InferenceOverloaded,
    InferenceScheduler,
    Priority,
    SchedulerClosed,
    has_idle_thread,
    run_at,
    try_run,
    usable_cores,
)


def _blocked(sched: InferenceScheduler) -> threading.Event:
    """Occupy the scheduler's only thread until the returned event is set."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    sched.submit_at(Priority.FINAL, hold)
    assert started.wait(10)
    return release


def test_higher_priority_runs_first_fifo_within_priority() -> None:
    sched = InferenceScheduler(1, max_queued=16)
    release = _blocked(sched)
    order: list[str] = []
    futures = [
        sched.submit_at(Priority.PARTIAL, lambda: order.append("partial")),
        sched.submit_at(Priority.SPEECH, lambda: order.append("speech-1")),
        sched.submit_at(Priority.FINAL, lambda: order.append("final-1")),
        sched.submit_at(Priority.SPEECH, lambda: order.append("speech-2")),
        sched.submit_at(Priority.FINAL, lambda: order.append("final-2")),
    ]
    release.set()
    for future in futures:
        future.result(10)
    assert order == ["final-1", "final-2", "speech-1", "speech-2", "partial"]
    assert sched.stats.completed["FINAL"] == 3
    assert sched.stats.wait_s_max["PARTIAL"] > 0
    sched.shutdown()


def test_partial_is_skipped_when_busy_and_runs_when_idle() -> None:
    sched = InferenceScheduler(1)
    assert sched.has_idle_thread()
    release = _blocked(sched)
    assert not sched.has_idle_thread()
    assert sched.try_submit(Priority.PARTIAL, lambda: 1) is None
    assert sched.stats.partials_skipped == 1
    release.set()
    # The holder finishes; then a partial is accepted and runs.
    for _ in range(1000):
        if sched.has_idle_thread():
            break
        threading.Event().wait(0.005)
    future = sched.try_submit(Priority.PARTIAL, lambda: 41 + 1)
    assert future is not None and future.result(10) == 42
    sched.shutdown()


def test_partial_waits_for_a_fully_idle_scheduler() -> None:
    # One of two threads free is not enough: a running job means the CPU is in use.
    sched = InferenceScheduler(2)
    release = _blocked(sched)
    assert sched.has_idle_thread() and not sched.idle()
    assert sched.try_submit(Priority.PARTIAL, lambda: 1) is None
    assert not has_idle_thread(sched)
    release.set()
    sched.shutdown()


def test_queue_is_bounded() -> None:
    sched = InferenceScheduler(1, max_queued=2)
    release = _blocked(sched)
    sched.submit_at(Priority.FINAL, lambda: None)
    sched.submit_at(Priority.FINAL, lambda: None)
    with pytest.raises(InferenceOverloaded):
        sched.submit_at(Priority.FINAL, lambda: None)
    assert sched.stats.rejected == 1
    release.set()
    sched.shutdown()


def test_cancelled_job_never_runs_and_errors_propagate() -> None:
    sched = InferenceScheduler(1)
    release = _blocked(sched)
    ran: list[int] = []
    doomed = sched.submit_at(Priority.FINAL, lambda: ran.append(1))
    assert doomed.cancel()

    def boom() -> None:
        raise ValueError("bad audio")

    failing = sched.submit_at(Priority.FINAL, boom)
    release.set()
    with pytest.raises(ValueError, match="bad audio"):
        failing.result(10)
    assert ran == []
    assert sched.stats.cancelled == 1
    sched.shutdown()


def test_shutdown_cancels_waiting_and_refuses_new() -> None:
    sched = InferenceScheduler(1)
    release = _blocked(sched)
    waiting = sched.submit_at(Priority.SPEECH, lambda: None)
    sched.shutdown(wait=False, cancel_futures=True)
    release.set()
    with pytest.raises(CancelledError):
        waiting.result(10)
    with pytest.raises(SchedulerClosed):
        sched.submit_at(Priority.FINAL, lambda: None)
    assert sched.try_submit(Priority.PARTIAL, lambda: None) is None


def test_threads_never_exceed_the_configured_count() -> None:
    sched = InferenceScheduler(2)
    active = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=10)

    def job() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        gate.wait()
        with lock:
            active -= 1

    futures = [sched.submit_at(Priority.FINAL, job) for _ in range(6)]
    for future in futures:
        future.result(10)
    assert peak == 2
    sched.shutdown()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        InferenceScheduler(0)
    with pytest.raises(ValueError):
        InferenceScheduler(1, max_queued=0)
    assert InferenceScheduler().threads == usable_cores() >= 1


async def test_asyncio_helpers_and_run_in_executor() -> None:
    sched = InferenceScheduler(1)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(sched, lambda: 7) == 7
    assert await run_at(sched, Priority.SPEECH, lambda: 8) == 8
    job = try_run(sched, Priority.PARTIAL, lambda: 9)
    assert job is not None and await job == 9
    sched.shutdown()
    # Any other executor works too, without priorities or skipping.
    with ThreadPoolExecutor(1) as pool:
        assert await run_at(pool, Priority.FINAL, lambda: 1) == 1
        other = try_run(pool, Priority.PARTIAL, lambda: 2)
        assert other is not None and await other == 2
        assert has_idle_thread(pool)


def test_best_effort_jobs_get_a_bounded_share() -> None:
    now = [100.0]
    sched = InferenceScheduler(1, best_effort_share=0.25, clock=lambda: now[0])

    def partial() -> None:
        now[0] += 0.2  # the job "takes" 0.2 s

    first = sched.try_submit(Priority.PARTIAL, partial)
    assert first is not None
    first.result(10)
    for _ in range(1000):  # the thread marks itself free just after the result
        if sched.busy == 0:
            break
        threading.Event().wait(0.005)
    # 0.2 s of work at a 25 % share: the next best-effort job waits 0.6 s.
    now[0] += 0.5
    assert not sched.idle()
    assert sched.try_submit(Priority.PARTIAL, lambda: None) is None
    now[0] += 0.11
    assert sched.idle()
    again = sched.try_submit(Priority.PARTIAL, lambda: None)
    assert again is not None
    again.result(10)
    # Finals never wait for the share.
    assert sched.submit_at(Priority.FINAL, lambda: 3).result(10) == 3
    with pytest.raises(ValueError):
        InferenceScheduler(1, best_effort_share=0.0)
    sched.shutdown()
