"""Real-time 20 ms pacing as a sans-IO schedule.

The transport's timer asks ``poll(now)`` how many frames are due and sleeps
until ``next_deadline()``. Deadlines sit on a fixed grid from the start time,
so small timer jitter never accumulates into drift. When the loop wakes a
little late it sends the frames it owes (at most ``max_catchup``); when it is
late by more than ``resync_after`` (a stalled loop) it sends one frame and
moves the grid to now instead of bursting: a burst would overflow the far
end's playout buffer or be heard as a skip, a shifted grid is inaudible.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Pacer", "PacerError", "PacerStats"]


class PacerError(ValueError):
    """Invalid pacing parameters."""


class PacerStats:
    """Counters a pacer keeps about itself."""

    __slots__ = ("frames", "late_frames", "max_lateness", "resyncs", "skipped_slots")

    def __init__(self) -> None:
        self.frames = 0
        self.late_frames = 0
        self.resyncs = 0
        self.skipped_slots = 0
        self.max_lateness = 0.0


class Pacer:
    """Emit one frame per ``interval`` seconds from a monotonic ``start``.

    Times are seconds from a monotonic clock supplied by the caller.
    """

    __slots__ = (
        "_interval",
        "_lateness",
        "_max_catchup",
        "_next",
        "_resync_after",
        "_slot",
        "_start",
        "stats",
    )

    def __init__(
        self,
        start: float,
        interval: float = 0.020,
        *,
        resync_after: float = 0.060,
        max_catchup: int = 2,
        lateness_window: int = 4096,
    ) -> None:
        if interval <= 0:
            raise PacerError("interval must be positive")
        if resync_after < interval:
            raise PacerError("resync_after must be at least one interval")
        if max_catchup < 1:
            raise PacerError("max_catchup must be >= 1")
        self._interval = interval
        self._resync_after = resync_after
        self._max_catchup = max_catchup
        self._start = start
        self._slot = 0
        self._next = start
        # Bounded: a metrics scraper drains it; if nobody does, old samples fall off.
        self._lateness: deque[float] = deque(maxlen=lateness_window)
        self.stats = PacerStats()

    @property
    def interval(self) -> float:
        return self._interval

    def next_deadline(self) -> float:
        """Monotonic time at which the next frame is due."""
        return self._next

    def poll(self, now: float) -> int:
        """Return how many frames to send now (0 if the next one is not due)."""
        if now < self._next:
            return 0
        lateness = now - self._next
        self._lateness.append(lateness)
        stats = self.stats
        if lateness > stats.max_lateness:
            stats.max_lateness = lateness
        if lateness > self._resync_after:
            # Stalled: one frame now, and the grid restarts here.
            owed = int(lateness / self._interval)
            stats.resyncs += 1
            stats.skipped_slots += owed
            stats.late_frames += 1
            stats.frames += 1
            self._start = now
            self._slot = 1
            self._next = now + self._interval
            return 1
        due = min(int(lateness / self._interval) + 1, self._max_catchup)
        if lateness >= self._interval:
            stats.late_frames += due - 1
        stats.frames += due
        self._slot += due
        self._next = self._start + self._slot * self._interval
        # Still behind after the capped catch-up: drop the owed slots rather
        # than bursting them next time.
        if now - self._next >= self._interval:
            skipped = int((now - self._next) / self._interval)
            stats.skipped_slots += skipped
            self._slot += skipped
            self._next = self._start + self._slot * self._interval
        return due

    def restart(self, now: float) -> None:
        """Put the grid's next deadline at ``now`` (e.g. when audio resumes)."""
        self._start = now
        self._slot = 0
        self._next = now

    def drain_lateness(self) -> list[float]:
        """Lateness samples (seconds) since the last drain, oldest first."""
        samples = list(self._lateness)
        self._lateness.clear()
        return samples
