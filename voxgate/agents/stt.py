"""Speech to text with faster-whisper (Whisper tiny.en int8 by default).

The model is loaded once per worker and warmed up before the worker says it is
ready. :meth:`SpeechRecognizer.transcribe` is blocking and thread-safe (up to
``stt_num_workers`` run in parallel); the pipeline calls it from a thread pool.
Partial hypotheses use cheap settings (greedy); the final one uses the configured
beam and the flow's vocabulary as hints.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from voxgate.agents.models import ModelError, SpeechModelConfig, resolve_stt_model

STT_SAMPLE_RATE = 16000
_MAX_HINT_WORDS = 40
_WORD = re.compile(r"[A-Za-z0-9']+")


class SttError(Exception):
    """Transcription failed (bad audio or a model error)."""


class SttConfig(msgspec.Struct, frozen=True, kw_only=True):
    language: str = "en"
    final_beam_size: int = 5
    partial_beam_size: int = 1
    partial_interval_s: float = 0.5
    """Re-decode the growing utterance at most this often; 0 disables partials."""
    partial_min_audio_s: float = 0.6


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    audio_s: float
    compute_s: float


def hint_phrase(hints: Sequence[str]) -> str | None:
    """Unique words of the hints, in order, capped so the prompt stays short."""
    seen: dict[str, None] = {}
    for hint in hints:
        for word in _WORD.findall(hint):
            key = word.lower()
            if key not in seen and len(seen) < _MAX_HINT_WORDS:
                seen[key] = None
    return " ".join(seen) if seen else None


class SpeechRecognizer:
    """A loaded Whisper model; share one per worker across calls."""

    def __init__(
        self, models: SpeechModelConfig | None = None, config: SttConfig | None = None
    ) -> None:
        self.models = models or SpeechModelConfig()
        self.config = config or SttConfig()
        self.model_name = resolve_stt_model(self.models)
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                self.model_name,
                device="cpu",
                compute_type=self.models.stt_compute_type,
                cpu_threads=self.models.stt_cpu_threads,
                num_workers=self.models.stt_num_workers,
                local_files_only=True,
            )
        except Exception as exc:
            raise ModelError(f"cannot load STT model {self.model_name!r}: {exc}") from exc
        self.load_s = time.perf_counter() - started
        self.warmup_s = self._warm_up()

    def _warm_up(self) -> float:
        # The first decode pays for allocations; do it before any caller waits.
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(STT_SAMPLE_RATE) * 300).astype(np.int16)
        return self.transcribe(noise, beam_size=1).compute_s

    def transcribe(
        self,
        audio: npt.NDArray[np.int16] | npt.NDArray[np.float32],
        *,
        beam_size: int | None = None,
        hints: Sequence[str] = (),
    ) -> Transcription:
        """Transcribe 16 kHz mono audio (int16 or float32 in [-1, 1])."""
        if audio.ndim != 1:
            raise SttError("audio must be mono (1-D)")
        samples = (
            audio.astype(np.float32) / 32768.0
            if audio.dtype == np.int16
            else audio.astype(np.float32, copy=False)
        )
        if samples.size == 0:
            return Transcription(text="", audio_s=0.0, compute_s=0.0)
        started = time.perf_counter()
        try:
            segments, _info = self._model.transcribe(
                samples,
                language=self.config.language,
                beam_size=beam_size or self.config.final_beam_size,
                temperature=0.0,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                hotwords=hint_phrase(hints),
            )
            text = " ".join(s.text.strip() for s in segments).strip()
        except Exception as exc:
            raise SttError(f"transcription failed: {exc}") from exc
        return Transcription(
            text=text,
            audio_s=samples.size / STT_SAMPLE_RATE,
            compute_s=time.perf_counter() - started,
        )

    def transcribe_partial(self, audio: npt.NDArray[np.int16]) -> Transcription:
        return self.transcribe(audio, beam_size=self.config.partial_beam_size)
