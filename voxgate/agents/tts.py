"""Text to speech with Piper (en_US-joe-medium by default), streamed sentence by sentence.

Piper renders a whole sentence per inference, so the reply is split into sentences
(and long sentences at commas) and each piece is sent as soon as it exists: the
caller hears the first sentence while the next is being rendered. Output is 8 kHz
µ-law in whole 20 ms frames, resampled from the voice's rate with soxr.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator

import msgspec
import numpy as np
import numpy.typing as npt
import onnxruntime
from piper import PiperConfig, PiperVoice, SynthesisConfig

from voxgate.agents.models import ModelError, SpeechModelConfig, resolve_tts_voice
from voxgate.media.g711 import ulaw_encode
from voxgate.media.resample import StreamResampler

OUT_RATE = 8000
FRAME_BYTES = 160
ULAW_SILENCE = b"\xff"

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_CLAUSE_END = re.compile(r"(?<=[,:])\s+")


class TtsError(Exception):
    """Synthesis failed."""


class TtsConfig(msgspec.Struct, frozen=True, kw_only=True):
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    volume: float = 0.9
    """Peak level of each sentence (Piper normalises to full scale first)."""
    max_piece_chars: int = 90
    """Longer sentences are split at commas so the first audio is ready sooner."""


def split_sentences(
    text: str, max_chars: int = 90, *, first_max_chars: int | None = None
) -> list[str]:
    """Sentences of ``text``; sentences longer than ``max_chars`` split at clause breaks.

    With ``first_max_chars``, a first piece longer than that is also split at its
    first clause break (when one exists), so the first audio of a live reply is
    ready sooner; a sentence without clause breaks stays whole.
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            if current and len(current) + len(clause) + 1 > max_chars:
                pieces.append(current)
                current = clause
            else:
                current = f"{current} {clause}".strip()
        if current:
            pieces.append(current)
    if first_max_chars is not None and pieces and len(pieces[0]) > first_max_chars:
        head, *rest = _CLAUSE_END.split(pieces[0], maxsplit=1)
        if rest:
            pieces[0:1] = [head, rest[0]]
    return pieces


class SpeechSynthesizer:
    """A loaded Piper voice; share one per worker. ``render`` is thread-safe."""

    def __init__(
        self, models: SpeechModelConfig | None = None, config: TtsConfig | None = None
    ) -> None:
        self.models = models or SpeechModelConfig()
        self.config = config or TtsConfig()
        model_path, config_path = resolve_tts_voice(self.models)
        self.voice_id = model_path.stem
        started = time.perf_counter()
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self.models.tts_threads
            options.inter_op_num_threads = 1
            # The arena keeps the peak of every sentence length ever rendered; without it
            # RSS after a few long replies was 233 MB instead of 280 MB, same speed.
            options.enable_cpu_mem_arena = False
            voice_config = PiperConfig.from_dict(json.loads(config_path.read_text("utf-8")))
            self._voice = PiperVoice(
                session=onnxruntime.InferenceSession(
                    str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
                ),
                config=voice_config,
            )
        except Exception as exc:
            raise ModelError(f"cannot load Piper voice {model_path}: {exc}") from exc
        self.sample_rate: int = voice_config.sample_rate
        self._syn = SynthesisConfig(
            length_scale=self.config.length_scale,
            noise_scale=self.config.noise_scale,
            noise_w_scale=self.config.noise_w_scale,
            normalize_audio=True,
            volume=self.config.volume,
        )
        # espeak-ng (the phonemizer) keeps global state; inference itself is reentrant.
        self._phonemize_lock = threading.Lock()
        self.load_s = time.perf_counter() - started
        started = time.perf_counter()
        self.render("Hello.")
        self.warmup_s = time.perf_counter() - started

    @property
    def settings_key(self) -> str:
        """Identifies voice + settings, for cache keys of pre-rendered prompts."""
        blob = json.dumps(
            {"voice": self.voice_id, "rate": OUT_RATE, **msgspec.structs.asdict(self.config)},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def render(self, text: str) -> npt.NDArray[np.int16]:
        """One piece of text at the voice's own rate (blocking)."""
        try:
            with self._phonemize_lock:
                sentences = self._voice.phonemize(text)
            parts: list[npt.NDArray[np.float32]] = []
            for phonemes in sentences:
                if not phonemes:
                    continue
                ids = self._voice.phonemes_to_ids(phonemes)
                audio = self._voice.phoneme_ids_to_audio(ids, self._syn)
                if isinstance(audio, tuple):
                    audio = audio[0]
                parts.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        except Exception as exc:
            raise TtsError(f"synthesis failed: {exc}") from exc
        if not parts:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(parts)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio * (self.config.volume / peak)
        return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)

    def stream(self) -> UlawStream:
        return UlawStream(self)

    def synthesize_ulaw(self, text: str) -> Iterator[tuple[str, bytes]]:
        """``(piece, µ-law)`` per sentence piece, each a whole number of 20 ms frames."""
        out = self.stream()
        pieces = split_sentences(text, self.config.max_piece_chars)
        for i, piece in enumerate(pieces):
            data = out.piece(piece)
            if i == len(pieces) - 1:
                data += out.finish()
            if data:
                yield piece, data

    def synthesize_all(self, text: str) -> bytes:
        return b"".join(data for _, data in self.synthesize_ulaw(text))


class UlawStream:
    """One utterance being converted to 8 kHz µ-law frames, piece by piece.

    Keeps the resampler state and a sub-frame remainder between pieces so the
    pieces join without clicks or gaps.
    """

    def __init__(self, synth: SpeechSynthesizer) -> None:
        self._synth = synth
        self._resampler = StreamResampler(synth.sample_rate, OUT_RATE)
        self._carry = b""
        self.first_chunk_s: float | None = None
        self._started = time.perf_counter()

    def piece(self, text: str) -> bytes:
        """Render ``text``; returns the whole frames ready so far (blocking)."""
        pcm = self._synth.render(text)
        data = self._emit(self._resampler.process(pcm))
        if self.first_chunk_s is None and data:
            self.first_chunk_s = time.perf_counter() - self._started
        return data

    def finish(self) -> bytes:
        """Drain the resampler and pad the last frame with silence."""
        data = self._carry + ulaw_encode(self._resampler.flush())
        self._carry = b""
        if len(data) % FRAME_BYTES:
            data += ULAW_SILENCE * (FRAME_BYTES - len(data) % FRAME_BYTES)
        return data

    def _emit(self, pcm: npt.NDArray[np.int16]) -> bytes:
        data = self._carry + ulaw_encode(pcm)
        whole = len(data) - len(data) % FRAME_BYTES
        self._carry = data[whole:]
        return data[:whole]
