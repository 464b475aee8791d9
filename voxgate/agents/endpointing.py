"""Sans-IO endpointing: turns per-window speech probabilities into caller turns.

Fed 32 ms windows of 16 kHz audio with their VAD probability, the
:class:`Endpointer` decides when the caller starts and stops talking and hands back
the whole utterance, including a rolling pre-roll (>= 1 s by default) so that the
first syllables, which VAD confirms only after ``start_ms``, are never clipped.

Its clock is the caller's audio: ``n`` windows in means ``n * 32 ms`` elapsed. The
worst-case delay from the end of speech to :class:`SpeechEnd` is bounded by
``min_silence_ms`` plus one window, and no utterance grows beyond
``max_utterance_ms``; there is no open-ended fallback.

With ``speculative_ms`` set, a :class:`SpeechPause` is emitted once per pause when
the caller has been silent that long (but not yet ``min_silence_ms``). It carries
the audio :class:`SpeechEnd` will carry if the caller stays silent (identical when
``speculative_ms >= trailing_keep_ms``), so the final transcription can start while
the endpointer is still making sure the turn is over; ``SpeechPause.key`` equals
``SpeechEnd.key`` exactly when the two audios are the same.

Early end: once the caller of :meth:`Endpointer.allow_early_end` has judged the
words of a pause complete (the pipeline does so from the speculative transcript),
that pause ends the turn after ``early_silence_ms`` instead of ``min_silence_ms``.
Speech in between cancels it. The worst case stays ``min_silence_ms`` + one window.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np
import numpy.typing as npt

from voxgate.agents.vad import WINDOW_S, WINDOW_SAMPLES

Int16Array = npt.NDArray[np.int16]


class EndpointerConfig(msgspec.Struct, frozen=True, kw_only=True):
    threshold: float = 0.5
    """A window at or above this probability is voiced."""
    neg_threshold: float = 0.35
    """Below this a window breaks an onset; in between it neither confirms nor breaks one.
    In speech, any window below ``threshold`` counts toward the ending silence, so the
    end is always decided ``min_silence_ms`` after the last voiced window."""
    start_ms: int = 128
    """Voiced audio needed (within the onset) before speech counts as started."""
    min_silence_ms: int = 400
    """Unvoiced time after speech that ends the turn."""
    preroll_ms: int = 1200
    """Audio kept before the confirmed start and sent to STT with the utterance."""
    trailing_keep_ms: int = 200
    """Silence kept after the last voiced window (Whisper transcribes better with it)."""
    max_utterance_ms: int = 15000
    barge_in_ms: int = 192
    """Voiced audio, while the agent speaks, that interrupts the agent."""
    barge_in_threshold: float = 0.6
    """A stricter voiced threshold while the agent speaks, against line echo."""
    speculative_ms: int = 0
    """Silence after which a :class:`SpeechPause` hands out the utterance so far, for a
    speculative final decode; 0 (or >= ``min_silence_ms``) disables it."""
    early_silence_ms: int = 0
    """Silence that ends a turn whose pause was passed to ``allow_early_end``; 0 disables.
    Keep it above the pauses callers make inside a sentence ("Yes, ..."): those can
    look complete too."""

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if min(self.start_ms, self.min_silence_ms, self.barge_in_ms) <= 0:
            raise ValueError("durations must be positive")
        if self.preroll_ms < 0 or self.max_utterance_ms < 1000:
            raise ValueError("preroll_ms must be >= 0 and max_utterance_ms >= 1000")
        if min(self.speculative_ms, self.trailing_keep_ms, self.early_silence_ms) < 0:
            raise ValueError("speculative_ms, early_silence_ms, trailing_keep_ms must be >= 0")


class State(enum.Enum):
    SILENCE = "silence"
    ONSET = "onset"  # voiced, not yet long enough to call it speech
    SPEECH = "speech"
    TRAILING = "trailing"  # in speech, unvoiced since ``_silence_start``


class Window(enum.Enum):
    VOICED = "voiced"
    AMBIGUOUS = "ambiguous"
    UNVOICED = "unvoiced"


# Where each kind of window takes each state; thresholds on accumulated durations
# (onset long enough, silence long enough, utterance too long) are checked after.
TRANSITIONS: dict[tuple[State, Window], State] = {
    (State.SILENCE, Window.VOICED): State.ONSET,
    (State.SILENCE, Window.AMBIGUOUS): State.SILENCE,
    (State.SILENCE, Window.UNVOICED): State.SILENCE,
    (State.ONSET, Window.VOICED): State.ONSET,
    (State.ONSET, Window.AMBIGUOUS): State.ONSET,
    (State.ONSET, Window.UNVOICED): State.SILENCE,
    (State.SPEECH, Window.VOICED): State.SPEECH,
    (State.SPEECH, Window.AMBIGUOUS): State.TRAILING,
    (State.SPEECH, Window.UNVOICED): State.TRAILING,
    (State.TRAILING, Window.VOICED): State.SPEECH,
    (State.TRAILING, Window.AMBIGUOUS): State.TRAILING,
    (State.TRAILING, Window.UNVOICED): State.TRAILING,
}


@dataclass(frozen=True, slots=True)
class SpeechStart:
    at: float
    """When the start was confirmed (audio time, s)."""
    onset: float
    """Start of the first voiced window of the run."""


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    at: float
    """When the end was decided (audio time, s)."""
    start: float
    end: float
    """Onset and end of the last voiced window: the caller's speech bounds."""
    audio: Int16Array = field(repr=False)
    audio_start: float
    """Audio time of ``audio[0]`` (before ``start`` by the pre-roll)."""
    reason: str = "silence"
    """``silence`` (``min_silence_ms``), ``early`` (``early_silence_ms`` after
    ``allow_early_end``) or ``max_length``."""

    @property
    def key(self) -> tuple[float, float, int]:
        return (self.audio_start, self.end, len(self.audio))


@dataclass(frozen=True, slots=True)
class SpeechPause:
    """The caller has paused ``speculative_ms``; the turn may be over (see module docstring)."""

    at: float
    start: float
    end: float
    """End of the last voiced window so far."""
    audio: Int16Array = field(repr=False)
    audio_start: float

    @property
    def key(self) -> tuple[float, float, int]:
        return (self.audio_start, self.end, len(self.audio))


@dataclass(frozen=True, slots=True)
class BargeIn:
    at: float
    onset: float


Event = SpeechStart | SpeechEnd | SpeechPause | BargeIn


class Endpointer:
    """Per-call endpointing state machine (see module docstring)."""

    def __init__(self, config: EndpointerConfig | None = None) -> None:
        self.config = config or EndpointerConfig()
        c = self.config
        self._preroll: deque[Int16Array] = deque(
            maxlen=max(1, math.ceil((c.preroll_ms + c.start_ms) / 1000 / WINDOW_S))
        )
        self._utterance: list[Int16Array] = []
        self._utterance_start = 0.0
        self.state = State.SILENCE
        self._windows = 0
        self._onset = 0.0
        self._voiced_s = 0.0
        self._silence_start = 0.0
        self._last_voiced_end = 0.0
        self._agent_speaking = False
        self._barge_run_start: float | None = None
        self._barged = False
        self._paused = False  # a SpeechPause went out for the current silence run
        self._early_key: tuple[float, float, int] | None = None

    @property
    def now(self) -> float:
        """Audio time after the last window fed."""
        return self._windows * WINDOW_S

    @property
    def in_speech(self) -> bool:
        return self.state in (State.SPEECH, State.TRAILING)

    @property
    def worst_case_latency_s(self) -> float:
        """Bound on end of speech -> :class:`SpeechEnd`, in audio time."""
        return self.config.min_silence_ms / 1000 + WINDOW_S

    @property
    def agent_speaking(self) -> bool:
        return self._agent_speaking

    @agent_speaking.setter
    def agent_speaking(self, value: bool) -> None:
        if value != self._agent_speaking:
            self._agent_speaking = value
            self._barge_run_start = None
            self._barged = False

    def allow_early_end(self, key: tuple[float, float, int]) -> SpeechEnd | None:
        """Let the pause with this key (:attr:`SpeechPause.key`) end at ``early_silence_ms``.

        Returns the :class:`SpeechEnd` at once when the pause is already that long (no
        need to wait for the next window). A stale key (the caller spoke again, or the
        turn already ended) is ignored.
        """
        self._early_key = key
        if self._early_due(self.now):
            return self._end_speech(self.now, "early")
        return None

    def _early_due(self, at: float) -> bool:
        c = self.config
        return (
            self.state is State.TRAILING
            and self._early_key is not None
            and 0 < c.early_silence_ms <= (at - self._silence_start) * 1000 + 1e-6
            and self._early_key == self._pause_key(at)
        )

    def _pause_key(self, at: float) -> tuple[float, float, int]:
        return (
            self._utterance_start,
            self._last_voiced_end,
            self._kept_windows(at) * WINDOW_SAMPLES,
        )

    def utterance_audio(self) -> Int16Array:
        """The current utterance so far (for partial transcripts); empty outside speech."""
        if not self.in_speech or not self._utterance:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._utterance)

    def process(self, window: Int16Array, probability: float) -> list[Event]:
        if window.shape != (WINDOW_SAMPLES,):
            raise ValueError(f"window must be {WINDOW_SAMPLES} samples")
        c = self.config
        start = self.now
        self._windows += 1
        end = self.now
        kind = (
            Window.VOICED
            if probability >= c.threshold
            else Window.UNVOICED
            if probability < c.neg_threshold
            else Window.AMBIGUOUS
        )
        events: list[Event] = []
        barge = self._barge_in(probability, start, end)
        if barge is not None:
            events.append(barge)

        prev = self.state
        self.state = TRANSITIONS[(prev, kind)]
        if self.in_speech:
            self._utterance.append(window)
        else:
            self._preroll.append(window)

        if prev is State.SILENCE and self.state is State.ONSET:
            self._onset, self._voiced_s = start, 0.0
        if self.state is State.ONSET and kind is Window.VOICED:
            self._voiced_s += WINDOW_S
            if self._voiced_s * 1000 >= c.start_ms - 1e-6:
                events.append(self._start_speech(end))
        elif kind is Window.VOICED and self.in_speech:
            self._last_voiced_end = end
        elif prev is State.SPEECH and self.state is State.TRAILING:
            self._silence_start = start
            self._paused = False
            self._early_key = None

        silence_ms = (end - self._silence_start) * 1000
        if (
            self.state is State.TRAILING
            and not self._paused
            and c.speculative_ms - 1e-6 <= silence_ms < c.min_silence_ms
            and c.speculative_ms > 0
        ):
            self._paused = True
            events.append(self._pause(end))
        if self.state is State.TRAILING and silence_ms >= c.min_silence_ms:
            events.append(self._end_speech(end, "silence"))
        elif self._early_due(end):
            events.append(self._end_speech(end, "early"))
        elif self.in_speech and (end - self._onset) * 1000 >= c.max_utterance_ms:
            events.append(self._end_speech(end, "max_length"))
        return events

    def _start_speech(self, at: float) -> SpeechStart:
        self.state = State.SPEECH
        self._utterance = list(self._preroll)
        self._utterance_start = at - len(self._utterance) * WINDOW_S
        self._preroll.clear()
        self._last_voiced_end = at
        return SpeechStart(at=at, onset=self._onset)

    def _kept_windows(self, at: float) -> int:
        keep_until = min(at, self._last_voiced_end + self.config.trailing_keep_ms / 1000)
        return max(1, round((keep_until - self._utterance_start) / WINDOW_S))

    def _pause(self, at: float) -> SpeechPause:
        audio = np.concatenate(self._utterance[: self._kept_windows(at)])
        return SpeechPause(
            at=at,
            start=self._onset,
            end=self._last_voiced_end,
            audio=audio,
            audio_start=self._utterance_start,
        )

    def _end_speech(self, at: float, reason: str) -> SpeechEnd:
        n_windows = self._kept_windows(at)
        audio = np.concatenate(self._utterance[:n_windows])
        # Windows after the kept part stay as the next turn's pre-roll.
        for w in self._utterance[n_windows:]:
            self._preroll.append(w)
        self._utterance = []
        self.state = State.SILENCE
        self._early_key = None
        end = self._last_voiced_end if reason != "max_length" else at
        return SpeechEnd(
            at=at,
            start=self._onset,
            end=end,
            audio=audio,
            audio_start=self._utterance_start,
            reason=reason,
        )

    def _barge_in(self, probability: float, start: float, end: float) -> BargeIn | None:
        if not self._agent_speaking or self._barged:
            return None
        if probability < self.config.barge_in_threshold:
            self._barge_run_start = None
            return None
        if self._barge_run_start is None:
            self._barge_run_start = start
        if (end - self._barge_run_start) * 1000 >= self.config.barge_in_ms - 1e-6:
            self._barged = True
            return BargeIn(at=end, onset=self._barge_run_start)
        return None
