"""Caller audio: µ-law WAV files, the fixture manifest, and a speech detector.

The fixtures are 8 kHz mono G.711 µ-law WAVs (format tag 7) described by
``manifest.json`` (speech bounds, conversation turns, DTMF tones). The stdlib
``wave`` module only reads PCM, so the RIFF container is parsed here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from voxgate.media.g711 import ulaw_decode

__all__ = [
    "FRAME_BYTES",
    "FRAME_S",
    "MULAW_SILENCE",
    "SAMPLE_RATE",
    "AudioFixtureError",
    "CallerAudio",
    "DtmfTone",
    "FixtureLibrary",
    "SpeechDetector",
    "Utterance",
    "default_audio_dir",
    "read_mulaw_wav",
    "write_mulaw_wav",
]

SAMPLE_RATE = 8000
FRAME_S = 0.02
FRAME_BYTES = 160
# µ-law code of linear zero: what Twilio and phones send for digital silence.
MULAW_SILENCE = 0xFF
_WAVE_FORMAT_MULAW = 7


class AudioFixtureError(Exception):
    """A fixture file or manifest entry is missing or not in the phone format."""


class Utterance(msgspec.Struct, frozen=True):
    """One stretch of caller speech, in seconds from the start of the audio."""

    start_s: float
    end_s: float
    text: str = ""


class DtmfTone(msgspec.Struct, frozen=True):
    """An in-band DTMF digit; Twilio reports it as a ``dtmf`` event."""

    digit: str
    start_s: float
    end_s: float


class CallerAudio(msgspec.Struct, frozen=True):
    """µ-law audio a simulated caller plays, with where its speech is."""

    name: str
    payload: bytes
    utterances: tuple[Utterance, ...] = ()
    dtmf: tuple[DtmfTone, ...] = ()

    @property
    def duration_s(self) -> float:
        return len(self.payload) / SAMPLE_RATE

    def padded(self, before_s: float, after_s: float) -> CallerAudio:
        """The same audio with digital silence around it (bounds shifted)."""
        if before_s < 0 or after_s < 0:
            raise AudioFixtureError("silence padding must not be negative")
        lead = _silence(before_s)
        shift = len(lead) / SAMPLE_RATE
        return CallerAudio(
            name=self.name,
            payload=lead + self.payload + _silence(after_s),
            utterances=tuple(_shift_utt(u, shift) for u in self.utterances),
            dtmf=tuple(_shift_tone(t, shift) for t in self.dtmf),
        )

    def truncated(self, max_s: float) -> CallerAudio:
        """At most ``max_s`` seconds; speech cut off by the end is dropped."""
        n = max(0, round(max_s * SAMPLE_RATE))
        if n >= len(self.payload):
            return self
        end = n / SAMPLE_RATE
        return CallerAudio(
            name=self.name,
            payload=self.payload[:n],
            utterances=tuple(u for u in self.utterances if u.end_s <= end),
            dtmf=tuple(t for t in self.dtmf if t.end_s <= end),
        )

    @classmethod
    def concat(cls, parts: Sequence[CallerAudio], gap_s: float) -> CallerAudio:
        """Play ``parts`` one after another with ``gap_s`` of silence between."""
        if not parts:
            raise AudioFixtureError("no audio to concatenate")
        gap = _silence(gap_s)
        payload = bytearray()
        utts: list[Utterance] = []
        tones: list[DtmfTone] = []
        for i, part in enumerate(parts):
            if i:
                payload += gap
            shift = len(payload) / SAMPLE_RATE
            utts.extend(_shift_utt(u, shift) for u in part.utterances)
            tones.extend(_shift_tone(t, shift) for t in part.dtmf)
            payload += part.payload
        return cls(
            name="+".join(p.name for p in parts),
            payload=bytes(payload),
            utterances=tuple(utts),
            dtmf=tuple(tones),
        )


def _silence(seconds: float) -> bytes:
    return bytes([MULAW_SILENCE]) * max(0, round(seconds * SAMPLE_RATE))


def _shift_utt(u: Utterance, shift: float) -> Utterance:
    return Utterance(start_s=u.start_s + shift, end_s=u.end_s + shift, text=u.text)


def _shift_tone(t: DtmfTone, shift: float) -> DtmfTone:
    return DtmfTone(digit=t.digit, start_s=t.start_s + shift, end_s=t.end_s + shift)


def read_mulaw_wav(path: Path) -> bytes:
    """The µ-law samples of an 8 kHz mono G.711 µ-law WAV file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AudioFixtureError(f"cannot read {path}: {exc}") from exc
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFixtureError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if len(body) < size:
            raise AudioFixtureError(f"{path}: truncated {chunk_id!r} chunk")
        if chunk_id == b"fmt ":
            if size < 16:
                raise AudioFixtureError(f"{path}: short fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFixtureError(f"{path}: data chunk before fmt chunk")
            if fmt != (_WAVE_FORMAT_MULAW, 1, SAMPLE_RATE, 8):
                raise AudioFixtureError(
                    f"{path}: need 8 kHz mono 8-bit µ-law (tag 7), got "
                    f"tag={fmt[0]} channels={fmt[1]} rate={fmt[2]} bits={fmt[3]}"
                )
            return bytes(body)
        pos += 8 + size + (size & 1)  # chunks are word aligned
    raise AudioFixtureError(f"{path}: no data chunk")


def write_mulaw_wav(path: Path, payload: bytes | bytearray) -> None:
    """Write 8 kHz mono µ-law samples as a WAV file (format tag 7)."""
    n = len(payload)
    fmt = struct.pack("<HHIIHHH", _WAVE_FORMAT_MULAW, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8, 0)
    chunks = [
        b"fmt " + struct.pack("<I", len(fmt)) + fmt,
        b"fact" + struct.pack("<II", 4, n),
        b"data" + struct.pack("<I", n) + bytes(payload) + (b"\x00" if n & 1 else b""),
    ]
    body = b"WAVE" + b"".join(chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def default_audio_dir() -> Path:
    """``<repo>/tests/data/audio``, where the fixtures live."""
    return Path(__file__).resolve().parents[1] / "tests" / "data" / "audio"


class _ManifestEntry(msgspec.Struct):
    name: str
    kind: str
    file: str
    speech_start_s: float
    speech_end_s: float
    text: str = ""
    turns: list[dict[str, object]] | None = None
    tones: list[dict[str, object]] | None = None


class FixtureLibrary:
    """The audio fixtures described by a ``manifest.json``."""

    def __init__(self, root: Path) -> None:
        self._root = root
        manifest = root / "manifest.json"
        try:
            raw = manifest.read_bytes()
            entries = msgspec.json.decode(raw, type=list[_ManifestEntry])
        except OSError as exc:
            raise AudioFixtureError(f"cannot read {manifest}: {exc}") from exc
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise AudioFixtureError(f"{manifest}: {exc}") from exc
        self._entries = {e.name: e for e in entries}
        self._cache: dict[str, CallerAudio] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def load(self, name: str) -> CallerAudio:
        """One fixture by manifest name (e.g. ``book_appointment``)."""
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        entry = self._entries.get(name)
        if entry is None:
            raise AudioFixtureError(f"unknown audio {name!r}; known: {', '.join(self.names())}")
        payload = read_mulaw_wav(self._root / entry.file)
        audio = CallerAudio(
            name=name,
            payload=payload,
            utterances=_utterances(entry),
            dtmf=_tones(entry),
        )
        self._cache[name] = audio
        return audio

    def sequence(self, names: Iterable[str], gap_s: float) -> CallerAudio:
        """Several fixtures in order, as one call's side of a conversation."""
        return CallerAudio.concat([self.load(n) for n in names], gap_s)


def _utterances(entry: _ManifestEntry) -> tuple[Utterance, ...]:
    if entry.kind == "dtmf":
        return ()
    if entry.turns:
        try:
            return tuple(
                Utterance(
                    start_s=float(str(t["start_s"])),
                    end_s=float(str(t["end_s"])),
                    text=str(t.get("text", "")),
                )
                for t in entry.turns
            )
        except (KeyError, ValueError) as exc:
            raise AudioFixtureError(f"{entry.name}: bad turns: {exc}") from exc
    return (Utterance(start_s=entry.speech_start_s, end_s=entry.speech_end_s, text=entry.text),)


def _tones(entry: _ManifestEntry) -> tuple[DtmfTone, ...]:
    if not entry.tones:
        return ()
    try:
        return tuple(
            DtmfTone(
                digit=str(t["digit"]),
                start_s=float(str(t["start_s"])),
                end_s=float(str(t["end_s"])),
            )
            for t in entry.tones
        )
    except (KeyError, ValueError) as exc:
        raise AudioFixtureError(f"{entry.name}: bad tones: {exc}") from exc


class SpeechDetector:
    """Tells audible µ-law chunks from silence by their RMS level."""

    def __init__(self, threshold_dbfs: float = -50.0) -> None:
        # Energy per µ-law code, so a chunk's energy is one table lookup + sum.
        pcm = ulaw_decode(bytes(range(256))).astype(np.float64)
        self._energy = pcm * pcm
        self._threshold = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2
        # 1 for codes at or above the threshold amplitude: a C-speed count
        # settles most chunks (all below -> RMS below; all above -> RMS above)
        # without numpy's per-call overhead, which dominates at 160 bytes.
        self._loud = bytes(1 if e >= self._threshold else 0 for e in self._energy)

    def level_dbfs(self, chunk: bytes | bytearray | memoryview) -> float:
        if not len(chunk):
            return -math.inf
        mean = float(self._energy[np.frombuffer(chunk, dtype=np.uint8)].mean())
        return -math.inf if mean <= 0 else 10 * math.log10(mean) - 20 * math.log10(32768.0)

    def is_speech(self, chunk: bytes) -> bool:
        n = len(chunk)
        if not n:
            return False
        loud = chunk.translate(self._loud).count(1)
        if loud == 0:
            return False
        if loud == n:
            return True
        total = float(self._energy[np.frombuffer(chunk, dtype=np.uint8)].sum())
        return total >= self._threshold * n
