"""Bounded queue of outbound µ-law frames with named marks in between.

The agent pushes audio (any multiple of bytes; split into 160-byte frames)
and marks (e.g. "end of sentence 3"); the paced sender pops one item per
tick. A mark popped by the sender is *in flight*: the audio before it was
handed to the transport but may not have been heard yet. The transport calls
``mark_played`` when it knows (Twilio echoes the mark; RTP playout is local so
it confirms at once). ``flush`` (barge-in) drops the queued audio and returns
every mark that will now never be reached, in order, so the agent knows which
sentences the caller did not hear.
"""

from __future__ import annotations

from collections import deque

from voxgate.media.frame import FRAME_BYTES_ULAW

__all__ = ["FlushResult", "OutboundMark", "OutboundQueue", "OutboundQueueFull"]

_SILENCE_BYTE = b"\xff"


class OutboundQueueFull(Exception):
    """Pushing would exceed the queue bound; nothing was queued."""


class OutboundMark:
    """A named point in the outbound stream, at frame ``position``."""

    __slots__ = ("name", "position")

    def __init__(self, name: str, position: int) -> None:
        self.name = name
        self.position = position

    def __repr__(self) -> str:
        return f"OutboundMark({self.name!r}, position={self.position})"


class FlushResult:
    """What a barge-in flush threw away."""

    __slots__ = ("dropped_frames", "dropped_marks")

    def __init__(self, dropped_frames: int, dropped_marks: list[str]) -> None:
        self.dropped_frames = dropped_frames
        self.dropped_marks = dropped_marks

    def __repr__(self) -> str:
        return f"FlushResult(frames={self.dropped_frames}, marks={self.dropped_marks})"


class OutboundQueue:
    """Bounded FIFO of 160-byte µ-law frames and marks.

    ``max_frames`` bounds the audio (default 30 s); ``max_marks`` bounds
    marks queued plus in flight. A push that does not fit raises
    ``OutboundQueueFull`` and queues nothing, so the caller can back off.
    """

    __slots__ = (
        "_frames_queued",
        "_in_flight",
        "_items",
        "_marks_queued",
        "_max_frames",
        "_max_marks",
        "_partial",
        "frames_pushed",
        "frames_sent",
        "played_position",
    )

    def __init__(self, max_frames: int = 1500, max_marks: int = 256) -> None:
        if max_frames < 1 or max_marks < 1:
            raise ValueError("queue bounds must be positive")
        self._max_frames = max_frames
        self._max_marks = max_marks
        self._items: deque[bytes | OutboundMark] = deque()
        self._frames_queued = 0
        self._marks_queued = 0
        self._in_flight: deque[OutboundMark] = deque()
        self._partial = b""
        self.frames_pushed = 0
        self.frames_sent = 0
        # Frames known to have been played (position of the last confirmed mark).
        self.played_position = 0

    def __len__(self) -> int:
        """Frames waiting to be sent."""
        return self._frames_queued

    @property
    def capacity(self) -> int:
        """Most frames the queue holds."""
        return self._max_frames

    @property
    def is_empty(self) -> bool:
        """Nothing left to pop (a trailing partial frame waits for more audio)."""
        return not self._items

    @property
    def space(self) -> int:
        """Whole frames that can still be pushed."""
        return self._max_frames - self._frames_queued

    @property
    def pending_marks(self) -> int:
        return self._marks_queued + len(self._in_flight)

    @property
    def has_pending_audio(self) -> bool:
        """True when audio is queued or a mark is still unconfirmed (caller may hear it)."""
        return self._frames_queued > 0 or bool(self._partial) or bool(self._in_flight)

    def push(self, ulaw: bytes) -> int:
        """Queue µ-law audio; returns the number of whole frames queued.

        A trailing partial frame waits for the next push (or is padded with
        silence by ``push_mark``/``finish``).
        """
        data = self._partial + ulaw if self._partial else ulaw
        whole = len(data) // FRAME_BYTES_ULAW
        if whole > self.space:
            raise OutboundQueueFull(f"{whole} frames do not fit ({self.space} free)")
        end = whole * FRAME_BYTES_ULAW
        items = self._items
        for offset in range(0, end, FRAME_BYTES_ULAW):
            items.append(data[offset : offset + FRAME_BYTES_ULAW])
        self._partial = data[end:]
        self._frames_queued += whole
        self.frames_pushed += whole
        return whole

    def push_mark(self, name: str) -> None:
        """Queue a mark after the audio pushed so far."""
        if self.pending_marks >= self._max_marks:
            raise OutboundQueueFull(f"{self._max_marks} marks already pending")
        if self._partial and self.space < 1:
            raise OutboundQueueFull("no room to pad the partial frame before the mark")
        self.finish()
        self._items.append(OutboundMark(name, self.frames_pushed))
        self._marks_queued += 1

    def finish(self) -> None:
        """Pad a trailing partial frame with silence so it can be sent."""
        if not self._partial:
            return
        if self.space < 1:
            raise OutboundQueueFull("no room for the padded final frame")
        pad = FRAME_BYTES_ULAW - len(self._partial)
        self._items.append(self._partial + _SILENCE_BYTE * pad)
        self._partial = b""
        self._frames_queued += 1
        self.frames_pushed += 1

    def pop(self) -> bytes | OutboundMark | None:
        """Next frame or mark to hand to the transport, or None when empty.

        A popped mark is in flight until ``mark_played`` or ``flush``.
        """
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, OutboundMark):
            self._marks_queued -= 1
            self._in_flight.append(item)
        else:
            self._frames_queued -= 1
            self.frames_sent += 1
        return item

    def pop_frame(self) -> tuple[bytes | None, list[OutboundMark]]:
        """Pop marks up to the next frame, then that frame (for one pacer tick)."""
        items = self._items
        if items:
            head = items[0]
            if isinstance(head, bytes):
                # The per-tick common case (a frame, no mark before it), inlined.
                items.popleft()
                self._frames_queued -= 1
                self.frames_sent += 1
                return head, []
        marks: list[OutboundMark] = []
        while True:
            item = self.pop()
            if item is None or isinstance(item, bytes):
                return item, marks
            marks.append(item)

    def mark_played(self, name: str) -> bool:
        """Confirm the far end reached ``name``; False if it was flushed or unknown.

        Marks are reached in order, so earlier in-flight marks are confirmed too.
        """
        for index, mark in enumerate(self._in_flight):
            if mark.name == name:
                for _ in range(index + 1):
                    self._in_flight.popleft()
                self.played_position = max(self.played_position, mark.position)
                return True
        return False

    def flush(self) -> FlushResult:
        """Drop all queued audio (barge-in); return the marks that will never be reached."""
        dropped_marks = [m.name for m in self._in_flight]
        self._in_flight.clear()
        dropped_frames = self._frames_queued + (1 if self._partial else 0)
        for item in self._items:
            if isinstance(item, OutboundMark):
                dropped_marks.append(item.name)
        self._items.clear()
        self._partial = b""
        self._frames_queued = 0
        self._marks_queued = 0
        # Dropped audio never reaches the far end: positions of later pushes
        # continue from what was actually sent.
        self.frames_pushed = self.frames_sent
        return FlushResult(dropped_frames, dropped_marks)
