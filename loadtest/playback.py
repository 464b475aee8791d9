"""A phone's playout of received agent audio, as a sans-IO state machine.

Twilio buffers the media a server sends and plays it at 8000 samples per
second; marks come back when the audio queued before them has been played,
and ``clear`` drops what is buffered and returns the pending marks at once.
``PlaybackBuffer`` models exactly that on a fixed 20 ms slot grid, fed with
explicit ``now`` values, so the load caller can tell what the caller actually
heard and when, and tests can drive it with a fake clock.

A talkspurt starts playing ``prebuffer_s`` after its first audio arrives (a
phone's jitter buffer). If the buffer runs dry mid-talkspurt and audio
arrives again within ``gap_max_s``, the silence the caller heard is a *gap*
(the agent broke up mid-utterance); a longer silence is a new talkspurt.
"""

from __future__ import annotations

import enum
from collections import deque

from loadtest.audio import FRAME_BYTES, FRAME_S, MULAW_SILENCE

__all__ = ["PlaybackBuffer", "PlaybackState", "PlaybackStep", "PlayedSlot"]

_SILENT_SLOT = bytes([MULAW_SILENCE]) * FRAME_BYTES


class PlaybackState(enum.Enum):
    IDLE = "idle"  # nothing buffered, nothing playing
    PREBUFFERING = "prebuffering"  # audio arrived, waiting for its first slot
    PLAYING = "playing"
    STARVED = "starved"  # ran dry mid-talkspurt; more audio may follow


class _Event(enum.Enum):
    AUDIO = "audio"
    START_SLOT = "start_slot"
    RAN_DRY = "ran_dry"
    CLEAR = "clear"


_TRANSITIONS: dict[tuple[PlaybackState, _Event], PlaybackState] = {
    (PlaybackState.IDLE, _Event.AUDIO): PlaybackState.PREBUFFERING,
    (PlaybackState.PREBUFFERING, _Event.AUDIO): PlaybackState.PREBUFFERING,
    (PlaybackState.PREBUFFERING, _Event.START_SLOT): PlaybackState.PLAYING,
    (PlaybackState.PREBUFFERING, _Event.CLEAR): PlaybackState.IDLE,
    (PlaybackState.PLAYING, _Event.AUDIO): PlaybackState.PLAYING,
    (PlaybackState.PLAYING, _Event.RAN_DRY): PlaybackState.STARVED,
    (PlaybackState.PLAYING, _Event.CLEAR): PlaybackState.IDLE,
    (PlaybackState.STARVED, _Event.AUDIO): PlaybackState.PREBUFFERING,
    (PlaybackState.STARVED, _Event.CLEAR): PlaybackState.IDLE,
    (PlaybackState.IDLE, _Event.CLEAR): PlaybackState.IDLE,
}


class PlayedSlot:
    """One 20 ms slot of the caller's earpiece."""

    __slots__ = ("at", "audio", "filled")

    def __init__(self, at: float, audio: bytes, filled: int) -> None:
        self.at = at  # when the slot started sounding
        self.audio = audio  # exactly FRAME_BYTES, silence-padded
        self.filled = filled  # how many bytes came from the agent


class PlaybackStep:
    """What ``advance`` played and which marks completed."""

    __slots__ = ("marks", "slots")

    def __init__(self) -> None:
        self.slots: list[PlayedSlot] = []
        self.marks: list[str] = []


class PlaybackBuffer:
    """Agent audio waiting to be played, marks, and gap accounting."""

    def __init__(
        self,
        start: float,
        *,
        prebuffer_s: float = 0.04,
        gap_max_s: float = 0.5,
        max_buffer_bytes: int = 8000 * 600,
    ) -> None:
        self.state = PlaybackState.IDLE
        self._start = start
        self._next_slot = 0
        self._prebuffer_s = prebuffer_s
        self._gap_max_s = gap_max_s
        self._max_buffer_bytes = max_buffer_bytes
        self._buf = bytearray()
        self._written = 0  # bytes ever accepted (positions for marks)
        self._played = 0  # bytes ever consumed or dropped
        self._marks: deque[tuple[int, str]] = deque()
        self._play_from = 0.0
        self._starved_at = 0.0
        self._starved_on_mark = False
        self._last_mark_at = -1  # stream position of the newest mark
        self._gap_open = False
        # Observations for the call report.
        self.gaps_s: list[float] = []
        self.dropped_on_clear = 0
        self.overflow_bytes = 0
        self.max_buffered = 0

    def _go(self, event: _Event) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is not None:
            self.state = nxt

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    @property
    def audible(self) -> bool:
        """Agent audio (maybe silence frames) is playing or about to."""
        return bool(self._buf) or self.state is PlaybackState.PLAYING

    @property
    def written(self) -> int:
        """Stream position after the newest accepted byte."""
        return self._written

    @property
    def played(self) -> int:
        """Stream position up to which audio has played (or was cleared)."""
        return self._played

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    def next_slot_at(self) -> float:
        return self._start + self._next_slot * FRAME_S

    def push(self, payload: bytes, now: float) -> None:
        """Agent audio arrived."""
        if not payload:
            return
        room = self._max_buffer_bytes - len(self._buf)
        if len(payload) > room:
            # A server dumping far ahead of real time; Twilio would not keep it all.
            self.overflow_bytes += len(payload) - max(room, 0)
            payload = payload[: max(room, 0)]
        if self.state is PlaybackState.IDLE:
            self._play_from = now + self._prebuffer_s
        elif self.state is PlaybackState.STARVED:
            if now - self._starved_at <= self._gap_max_s and not self._starved_on_mark:
                self._gap_open = True
            self._play_from = now + self._prebuffer_s
        self._go(_Event.AUDIO)
        self._buf += payload
        self._written += len(payload)
        self.max_buffered = max(self.max_buffered, len(self._buf))

    def add_mark(self, name: str) -> None:
        """A mark: completes once everything pushed before it has played."""
        self._marks.append((self._written, name))
        self._last_mark_at = self._written

    def clear(self) -> list[str]:
        """Drop buffered audio; every pending mark is returned now."""
        self.dropped_on_clear += len(self._buf)
        self._played += len(self._buf)
        self._buf.clear()
        self._gap_open = False
        self._go(_Event.CLEAR)
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names

    def advance(self, now: float) -> PlaybackStep:
        """Play every slot that has started by ``now``."""
        step = PlaybackStep()
        while True:
            at = self.next_slot_at()
            if at > now:
                break
            self._next_slot += 1
            # Marks for audio that finished by the start of this slot.
            while self._marks and self._marks[0][0] <= self._played:
                step.marks.append(self._marks.popleft()[1])
            step.slots.append(self._play_slot(at))
        return step

    def _play_slot(self, at: float) -> PlayedSlot:
        if self.state is PlaybackState.PREBUFFERING and at >= self._play_from:
            if self._gap_open:
                self.gaps_s.append(at - self._starved_at)
                self._gap_open = False
            self._go(_Event.START_SLOT)
        if self.state is not PlaybackState.PLAYING:
            return PlayedSlot(at, _SILENT_SLOT, 0)
        take = min(FRAME_BYTES, len(self._buf))
        chunk = bytes(self._buf[:take])
        del self._buf[:take]
        self._played += take
        if take < FRAME_BYTES:
            self._starved_at = at + take / 8000
            # Running dry exactly where a mark sits is the end of an agent
            # segment the server delimited itself, not a break-up.
            self._starved_on_mark = self._last_mark_at == self._played
            self._go(_Event.RAN_DRY)
            chunk += _SILENT_SLOT[take:]
        return PlayedSlot(at, chunk, take)
