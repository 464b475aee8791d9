"""The 20 ms PCM16 audio frame that moves through the media core."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxgate.media import g711

__all__ = [
    "FRAME_BYTES_ULAW",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "Frame",
    "FrameError",
]

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 160
FRAME_BYTES_ULAW = FRAME_SAMPLES  # G.711 is one byte per sample

# Pre-computed so silence frames cost no encoding work; µ-law 0xFF decodes to 0.
_ULAW_SILENCE = b"\xff" * FRAME_BYTES_ULAW


class FrameError(ValueError):
    """A frame was built from audio of the wrong size, type or rate."""


class Frame:
    """20 ms of mono PCM16 audio.

    ``pcm`` is an int16 array of ``sample_rate * 20 / 1000`` samples (160 at
    8 kHz, the telephone rate every transport speaks).
    """

    __slots__ = ("pcm", "sample_rate")

    pcm: npt.NDArray[np.int16]
    sample_rate: int

    def __init__(self, pcm: npt.NDArray[np.int16], sample_rate: int = SAMPLE_RATE) -> None:
        if sample_rate <= 0 or sample_rate % 50 != 0:
            raise FrameError(f"sample rate {sample_rate} has no whole 20 ms frame")
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
            raise FrameError("frame PCM must be an int16 numpy array")
        expected = sample_rate * FRAME_MS // 1000
        if pcm.shape != (expected,):
            raise FrameError(f"frame at {sample_rate} Hz needs {expected} samples, got {pcm.shape}")
        self.pcm = pcm
        self.sample_rate = sample_rate

    @classmethod
    def silence(cls, sample_rate: int = SAMPLE_RATE) -> Frame:
        """A frame of digital silence."""
        return cls(np.zeros(sample_rate * FRAME_MS // 1000, dtype=np.int16), sample_rate)

    @classmethod
    def from_ulaw(cls, data: bytes | bytearray | memoryview) -> Frame:
        """Decode exactly 160 bytes of 8 kHz µ-law."""
        if len(data) != FRAME_BYTES_ULAW:
            raise FrameError(f"µ-law frame needs {FRAME_BYTES_ULAW} bytes, got {len(data)}")
        return cls(g711.ulaw_decode(data))

    @classmethod
    def from_alaw(cls, data: bytes | bytearray | memoryview) -> Frame:
        """Decode exactly 160 bytes of 8 kHz A-law."""
        if len(data) != FRAME_BYTES_ULAW:
            raise FrameError(f"A-law frame needs {FRAME_BYTES_ULAW} bytes, got {len(data)}")
        return cls(g711.alaw_decode(data))

    def to_ulaw(self) -> bytes:
        """Encode to 160 bytes of µ-law (8 kHz frames only)."""
        self._require_telephone_rate()
        return g711.ulaw_encode(self.pcm)

    def to_alaw(self) -> bytes:
        """Encode to 160 bytes of A-law (8 kHz frames only)."""
        self._require_telephone_rate()
        return g711.alaw_encode(self.pcm)

    @staticmethod
    def ulaw_silence() -> bytes:
        """160 bytes of µ-law silence, without an encode."""
        return _ULAW_SILENCE

    @property
    def duration_ms(self) -> int:
        return FRAME_MS

    def is_silent(self, threshold: int = 0) -> bool:
        """True when no sample's magnitude exceeds ``threshold``."""
        return int(np.abs(self.pcm.astype(np.int32)).max()) <= threshold

    def _require_telephone_rate(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise FrameError(f"G.711 needs {SAMPLE_RATE} Hz, frame is {self.sample_rate} Hz")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self.sample_rate == other.sample_rate and bool(np.array_equal(self.pcm, other.pcm))

    __hash__ = None  # type: ignore[assignment]  # mutable payload

    def __repr__(self) -> str:
        return f"Frame({self.sample_rate} Hz, {len(self.pcm)} samples)"
