"""Reading the WAV files telephony deals in: PCM16, µ-law and A-law.

The standard library's ``wave`` reads only integer PCM; caller fixtures and
prompts are often 8 kHz G.711 WAVs (format tags 7 and 6). Used by loaders at
start-up and by tests, never on the media loop.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.media import g711

__all__ = ["WavAudio", "WavError", "read_wav"]

_FORMAT_PCM = 1
_FORMAT_ALAW = 6
_FORMAT_ULAW = 7
_FORMAT_EXTENSIBLE = 0xFFFE


class WavError(ValueError):
    """Not a WAV file this reader understands."""


class WavAudio:
    """Decoded audio: int16 samples shaped (frames, channels)."""

    __slots__ = ("channels", "pcm", "sample_rate", "source_format")

    def __init__(
        self, pcm: npt.NDArray[np.int16], sample_rate: int, channels: int, source_format: str
    ) -> None:
        self.pcm = pcm
        self.sample_rate = sample_rate
        self.channels = channels
        self.source_format = source_format

    @property
    def mono(self) -> npt.NDArray[np.int16]:
        """First channel as a 1-D array."""
        return np.ascontiguousarray(self.pcm[:, 0])

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


def read_wav(path: str | Path) -> WavAudio:
    """Read a PCM16, µ-law or A-law WAV file."""
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    body: bytes | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        start = offset + 8
        chunk = data[start : start + size]
        if chunk_id == b"fmt ":
            if len(chunk) < 16:
                raise WavError(f"{path}: short fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", chunk)
            if tag == _FORMAT_EXTENSIBLE and len(chunk) >= 26:
                (tag,) = struct.unpack_from("<H", chunk, 24)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            body = chunk
        offset = start + size + (size & 1)
    if fmt is None or body is None:
        raise WavError(f"{path}: missing fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise WavError(f"{path}: bad channel count or rate")
    if tag == _FORMAT_PCM and bits == 16:
        body = body[: len(body) // 2 * 2]
        samples = np.frombuffer(body, dtype="<i2").astype(np.int16)
        kind = "pcm16"
    elif tag == _FORMAT_ULAW and bits == 8:
        samples, kind = g711.ulaw_decode(body), "ulaw"
    elif tag == _FORMAT_ALAW and bits == 8:
        samples, kind = g711.alaw_decode(body), "alaw"
    else:
        raise WavError(f"{path}: unsupported WAV format tag {tag} with {bits} bits")
    frames = len(samples) // channels
    return WavAudio(samples[: frames * channels].reshape(frames, channels), rate, channels, kind)
