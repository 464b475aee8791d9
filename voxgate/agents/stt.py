"""Speech to text with faster-whisper (Whisper tiny.en int8 by default).

The model is loaded once per worker and warmed up before the worker says it is
ready. :meth:`SpeechRecognizer.transcribe` is blocking and thread-safe (up to
``stt_num_workers`` run in parallel); the pipeline calls it from a thread pool.
Partial hypotheses use cheap settings (greedy); the final one uses the configured
beam and the flow's vocabulary as hints.

Whisper's encoder always sees 30 s of (padded) audio when driven through
faster-whisper, and on a caller's 1-4 s utterance that padding is ~80 % of the
compute (profiled: ``encode`` took 2.5 s of 3.2 s for three beam-5 decodes). A turn
is never longer than ``max_utterance_ms`` (15 s), so by default the encoder runs on
the utterance plus ``encoder_pad_s`` of silence, at least ``encoder_min_s``: 3-4x
faster, same transcripts on every fixture. Whisper was trained on 30 s windows and
with too little padding it can loop ("Goodbye Goodbye ..."), so a trimmed result
that looks like a loop (compressible, or hitting the token cap) is decoded again
the standard way; accuracy never depends on the shortcut.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from voxgate.agents.models import ModelError, SpeechModelConfig, resolve_stt_model

STT_SAMPLE_RATE = 16000
_MAX_HINT_WORDS = 40
_WORD = re.compile(r"[A-Za-z0-9']+")
_FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
_FULL_FRAMES = 3000  # the 30 s window Whisper was trained on
_LOOP_COMPRESSION = 2.4
"""Whisper's own threshold: text that zlib-compresses better than this is repetitive."""


class SttError(Exception):
    """Transcription failed (bad audio or a model error)."""


class SttConfig(msgspec.Struct, frozen=True, kw_only=True):
    language: str = "en"
    final_beam_size: int = 5
    partial_beam_size: int = 1
    partial_interval_s: float = 0.5
    """Re-decode the growing utterance at most this often; 0 disables partials."""
    partial_min_audio_s: float = 0.6
    trim_encoder: bool = True
    """Run the encoder on the utterance plus padding instead of a full 30 s window."""
    encoder_pad_s: float = 3.0
    """Silence after the audio that the trimmed encoder sees (Whisper ends cleaner with it)."""
    encoder_min_s: float = 10.0
    """Shortest encoder window: below ~10 s, short phrases start to loop."""
    final_hints: bool = False
    """Whether the pipeline passes the flow's vocabulary as hotwords to the final decode.
    Measured on the 19 fixture turns with a 40-word flow vocabulary: exact transcripts
    drop from 19/19 to 13/19 (10/19 with the trimmed encoder) because Whisper tiny.en
    imitates the unpunctuated word list; keep it for flows whose words Whisper misses."""
    trim_max_tokens_per_s: float = 8.0
    """Token cap of a trimmed decode (speech is ~3-4 tokens/s); reaching it means a loop."""


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    audio_s: float
    compute_s: float
    trimmed: bool = False
    """Decoded with the trimmed encoder (False: the standard 30 s path, or a fallback)."""
    fallback: bool = False
    """The trimmed decode looked like a loop and was redone the standard way."""


def looks_like_loop(text: str, tokens: int, max_tokens: int) -> bool:
    """A decode that ran into the token cap or repeats itself.

    Long loops compress well (zlib); short ones are the same words said two or more
    times ("goodbye goodbye"). A caller who really repeats themselves only costs a
    standard decode.
    """
    if tokens >= max_tokens:
        return True
    data = text.encode("utf-8")
    if len(data) > 24 and len(data) / len(zlib.compress(data)) > _LOOP_COMPRESSION:
        return True
    words = [w.lower() for w in _WORD.findall(text)]
    for times in range(2, len(words) + 1):
        size = len(words) // times
        if size * times == len(words) and words == words[:size] * times:
            return True
    return False


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
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language=self.config.language,
        )
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])
        self._features_lock = threading.Lock()
        self.trimmed_decodes = 0
        self.fallbacks = 0
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
        beam = beam_size or self.config.final_beam_size
        hotwords = hint_phrase(hints)
        trimmed = fallback = False
        text: str | None = None
        if self.config.trim_encoder and samples.size < self._full_window_samples():
            text = self._decode_trimmed(samples, beam, hotwords)
            trimmed = text is not None
            fallback = text is None
        if text is None:
            text = self._decode_full(samples, beam, hotwords)
        return Transcription(
            text=text,
            audio_s=samples.size / STT_SAMPLE_RATE,
            compute_s=time.perf_counter() - started,
            trimmed=trimmed,
            fallback=fallback,
        )

    def _full_window_samples(self) -> int:
        # Audio that leaves no room for the padding gains nothing from trimming.
        usable_s = _FULL_FRAMES / _FRAMES_PER_S - self.config.encoder_pad_s
        return int(usable_s * STT_SAMPLE_RATE)

    def _decode_full(
        self, samples: npt.NDArray[np.float32], beam: int, hotwords: str | None
    ) -> str:
        try:
            segments, _info = self._model.transcribe(
                samples,
                language=self.config.language,
                beam_size=beam,
                temperature=0.0,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                hotwords=hotwords,
            )
            return " ".join(s.text.strip() for s in segments).strip()
        except Exception as exc:
            raise SttError(f"transcription failed: {exc}") from exc

    def _decode_trimmed(
        self, samples: npt.NDArray[np.float32], beam: int, hotwords: str | None
    ) -> str | None:
        """Encoder on a short window; None when the result looks like a loop."""
        c = self.config
        try:
            # The extractor object is shared; keep its calls serial (it is cheap).
            with self._features_lock:
                features = self._model.feature_extractor(samples)
            content = features.shape[-1]
            wanted = max(
                int(c.encoder_min_s * _FRAMES_PER_S), content + int(c.encoder_pad_s * _FRAMES_PER_S)
            )
            # Whole seconds, so the encoder sees a handful of distinct shapes.
            frames = min(_FULL_FRAMES, -(-wanted // _FRAMES_PER_S) * _FRAMES_PER_S)
            window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
            window[0, :, : min(frames, content)] = features[:, :frames]
            encoded = self._model.encode(window)
            prompt = self._model.get_prompt(
                self._tokenizer, [], without_timestamps=True, hotwords=hotwords
            )
            max_tokens = int(samples.size / STT_SAMPLE_RATE * c.trim_max_tokens_per_s) + 2
            result = self._model.model.generate(
                encoded,
                [prompt],
                beam_size=beam,
                # Room past the cap, so that reaching the cap is observable.
                max_length=len(prompt) + max_tokens + 8,
                suppress_blank=True,
                suppress_tokens=self._suppress,
            )[0]
            tokens = result.sequences_ids[0]
            text = str(self._tokenizer.decode(tokens)).strip()
        except Exception as exc:
            raise SttError(f"transcription failed: {exc}") from exc
        if looks_like_loop(text, len(tokens), max_tokens):
            self.fallbacks += 1
            return None
        self.trimmed_decodes += 1
        return text

    def transcribe_partial(self, audio: npt.NDArray[np.int16]) -> Transcription:
        return self.transcribe(audio, beam_size=self.config.partial_beam_size)
