"""One inference scheduler per worker, shared by all of its calls.

Whisper and Piper jobs of every call run on a few threads, sized to the cores the
worker may use (more threads than cores only adds context switches and makes every
job slower). Jobs wait in one bounded priority queue:

- ``FINAL``: final and speculative transcriptions; a caller is waiting for them.
- ``SPEECH``: Piper pieces of a live reply; a caller is waiting for those too, but
  a reply's later pieces have the earlier pieces' playing time as slack.
- ``PARTIAL``: partial hypotheses while a caller speaks. They only feed live
  captions, and a late one is useless (the next one replaces it), so a partial is
  started only when the scheduler is idle (no job running or waiting); otherwise
  it is skipped (:meth:`InferenceScheduler.try_submit` returns ``None``). So at
  most one partial runs at a time and, with two or more threads, a final that
  arrives meanwhile still finds a free thread. An idle thread is not an idle CPU
  on a busy host: a whole Whisper pass per partial (~0.25 s of CPU, the encoder
  window is at least 10 s) would otherwise be spent whenever one thread is free.
  So best-effort jobs also get at most ``best_effort_share`` of one thread's time
  (after one took ``d`` seconds, the next waits ``d * (1 / share - 1)``): with
  many callers talking, captions get sparser instead of finals getting later.

Within a priority, jobs run first come first served. The queue is bounded: when
``max_queued`` jobs wait, :meth:`submit_at` raises :class:`InferenceOverloaded`
rather than letting latency grow without limit (with the worker's call cap the
bound is never reached in normal operation).

It is a :class:`concurrent.futures.Executor`, so ``loop.run_in_executor`` works
with it (at ``FINAL`` priority). :func:`run_at` / :func:`try_run` also accept any
other executor (then priorities are ignored), which keeps tests simple.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


class Priority(enum.IntEnum):
    FINAL = 0
    SPEECH = 1
    PARTIAL = 2


class InferenceOverloaded(RuntimeError):
    """The scheduler's queue is full; the job was not accepted."""


class SchedulerClosed(RuntimeError):
    """The scheduler was shut down."""


def usable_cores() -> int:
    """CPUs this process may run on (affinity / cpuset aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class SchedulerStats:
    """Counters for metrics and benchmarks (read without a lock: monotonic ints)."""

    submitted: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in Priority})
    completed: dict[str, int] = field(default_factory=lambda: {p.name: 0 for p in Priority})
    cancelled: int = 0
    partials_skipped: int = 0
    rejected: int = 0
    max_queued: int = 0
    wait_s_max: dict[str, float] = field(default_factory=lambda: {p.name: 0.0 for p in Priority})

    def as_dict(self) -> dict[str, Any]:
        return {
            "submitted": dict(self.submitted),
            "completed": dict(self.completed),
            "cancelled": self.cancelled,
            "partials_skipped": self.partials_skipped,
            "rejected": self.rejected,
            "max_queued": self.max_queued,
            "wait_ms_max": {k: round(v * 1000, 1) for k, v in self.wait_s_max.items()},
        }


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    queued_at: float = field(compare=False)
    future: Future[Any] = field(compare=False)
    fn: Callable[[], Any] = field(compare=False)


class InferenceScheduler(Executor):
    """Bounded priority thread pool; see the module docstring."""

    def __init__(
        self,
        threads: int | None = None,
        *,
        max_queued: int = 64,
        best_effort_share: float = 0.25,
        name: str = "infer",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        if max_queued < 1:
            raise ValueError("max_queued must be >= 1")
        if not 0.0 < best_effort_share <= 1.0:
            raise ValueError("best_effort_share must be in (0, 1]")
        self.threads = threads if threads is not None else usable_cores()
        self.max_queued = max_queued
        self.best_effort_share = best_effort_share
        self._best_effort_after = 0.0  # clock time before which best-effort jobs are skipped
        self.stats = SchedulerStats()
        self._clock = clock
        self._name = name
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._closed = False
        self._workers: list[threading.Thread] = []

    # -- state ---------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._heap)

    @property
    def busy(self) -> int:
        with self._cond:
            return self._busy

    def has_idle_thread(self) -> bool:
        """A job submitted now would start at once (no queue, a thread free)."""
        with self._cond:
            return not self._heap and self._busy < self.threads

    def idle(self) -> bool:
        """Nothing running, nothing waiting: the condition for a best-effort job."""
        with self._cond:
            return not self._heap and self._busy == 0 and self._clock() >= self._best_effort_after

    # -- submitting ----------------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Executor API (``run_in_executor``): a ``FINAL`` job."""
        return self.submit_at(Priority.FINAL, lambda: fn(*args, **kwargs))

    def submit_at(self, priority: Priority, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise SchedulerClosed("inference scheduler is shut down")
            if len(self._heap) >= self.max_queued:
                self.stats.rejected += 1
                raise InferenceOverloaded(f"{len(self._heap)} inference jobs already waiting")
            self._push(priority, future, fn)
        return future

    def try_submit(self, priority: Priority, fn: Callable[[], T]) -> Future[T] | None:
        """Submit only if the scheduler is idle; ``None`` (skipped) otherwise."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed or self._heap or self._busy or self._clock() < self._best_effort_after:
                self.stats.partials_skipped += 1
                return None
            self._push(priority, future, self._best_effort(fn))
        return future

    def _best_effort(self, fn: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            started = self._clock()
            try:
                return fn()
            finally:
                took = self._clock() - started
                rest = took * (1.0 / self.best_effort_share - 1.0)
                with self._cond:
                    self._best_effort_after = max(self._best_effort_after, self._clock() + rest)

        return run

    def _push(self, priority: Priority, future: Future[Any], fn: Callable[[], Any]) -> None:
        # Called with the lock held.
        heapq.heappush(self._heap, _Job(int(priority), next(self._seq), self._clock(), future, fn))
        self.stats.submitted[priority.name] += 1
        self.stats.max_queued = max(self.stats.max_queued, len(self._heap))
        if len(self._workers) < self.threads and self._busy + len(self._heap) > len(self._workers):
            thread = threading.Thread(
                target=self._run, name=f"{self._name}-{len(self._workers)}", daemon=True
            )
            self._workers.append(thread)
            thread.start()
        self._cond.notify()

    # -- threads -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return  # closed and drained
                job = heapq.heappop(self._heap)
                self._busy += 1
            try:
                self._execute(job)
            finally:
                with self._cond:
                    self._busy -= 1

    def _execute(self, job: _Job) -> None:
        name = Priority(job.priority).name
        if not job.future.set_running_or_notify_cancel():
            self.stats.cancelled += 1
            return
        waited = self._clock() - job.queued_at
        if waited > self.stats.wait_s_max[name]:
            self.stats.wait_s_max[name] = waited
        try:
            result = job.fn()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
        self.stats.completed[name] += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._closed = True
            if cancel_futures:
                while self._heap:
                    heapq.heappop(self._heap).future.cancel()
            self._cond.notify_all()
            workers = list(self._workers)
        if wait:
            for thread in workers:
                thread.join()


async def run_at(executor: Executor, priority: Priority, fn: Callable[[], T]) -> T:
    """Run ``fn`` on ``executor`` at ``priority`` (priorities need an InferenceScheduler)."""
    if isinstance(executor, InferenceScheduler):
        return await asyncio.wrap_future(executor.submit_at(priority, fn))
    return await asyncio.get_running_loop().run_in_executor(executor, fn)


def try_run(
    executor: Executor, priority: Priority, fn: Callable[[], T]
) -> asyncio.Future[T] | None:
    """Start ``fn`` only if the scheduler is idle now; ``None`` when it was skipped.

    Any other executor always accepts (it has no notion of busy).
    """
    if isinstance(executor, InferenceScheduler):
        future = executor.try_submit(priority, fn)
        return None if future is None else asyncio.wrap_future(future)
    return asyncio.wrap_future(executor.submit(fn))


def has_idle_thread(executor: Executor) -> bool:
    """Whether a best-effort job would be accepted now (see :meth:`InferenceScheduler.idle`)."""
    return executor.idle() if isinstance(executor, InferenceScheduler) else True
