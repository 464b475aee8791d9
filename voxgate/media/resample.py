"""Streaming sample-rate conversion (soxr) that keeps filter state across chunks.

One ``StreamResampler`` per direction per call: feeding it audio piece by piece
gives the same signal as resampling the whole thing at once (no clicks at chunk
boundaries), apart from the filter's start-up delay which ``flush`` drains.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["ResampleError", "StreamResampler"]

Int16Array = npt.NDArray[np.int16]


class ResampleError(ValueError):
    """Bad rates, bad input, or use after ``flush``."""


class StreamResampler:
    """Resample mono int16 PCM from ``in_rate`` to ``out_rate`` in a stream.

    Equal rates are a pass-through. After ``flush`` the stream is finished; a
    new call needs a new resampler (they are cheap).
    """

    __slots__ = ("_closed", "_in_rate", "_out_rate", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ResampleError(f"rates must be positive, got {in_rate} -> {out_rate}")
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._closed = False
        self._stream: soxr.ResampleStream | None = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    def process(self, pcm: npt.NDArray[np.int16]) -> Int16Array:
        """Resample the next chunk; output length varies by a sample or so."""
        if self._closed:
            raise ResampleError("resampler already flushed")
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ResampleError("input must be a 1-D int16 numpy array")
        if self._stream is None:
            return pcm.copy()
        out: Int16Array = self._stream.resample_chunk(np.ascontiguousarray(pcm), last=False)
        return out

    def flush(self) -> Int16Array:
        """Drain the filter tail at end of stream; the resampler is then closed."""
        if self._closed:
            return np.zeros(0, dtype=np.int16)
        self._closed = True
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        out: Int16Array = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return out
