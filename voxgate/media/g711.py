"""G.711 µ-law and A-law codecs as numpy lookup tables.

The tables are built once at import from the ITU-T G.711 reference algorithm
(the same one CPython's ``audioop`` implements), so encoding and decoding a
buffer is a single fancy-index: no per-sample Python work on the hot path.
Encoding indexes a 65536-entry table with the uint16 view of the samples.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "alaw_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_alaw",
]

Int16Array = npt.NDArray[np.int16]
UInt8Array = npt.NDArray[np.uint8]

# Segment end points of the reference implementation (14-bit for µ-law after
# adding the bias, 13-bit for A-law).
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159


def _all_int16() -> npt.NDArray[np.int32]:
    # Ordered by the uint16 bit pattern so the table can be indexed by
    # ``pcm.view(np.uint16)`` directly.
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> UInt8Array:
    pcm = _all_int16() >> 2  # 14-bit magnitude domain of the reference coder
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return np.asarray((code ^ mask) & 0xFF, dtype=np.uint8)


def _build_ulaw_decode() -> Int16Array:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.asarray(np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS), dtype=np.int16)


def _build_alaw_encode() -> UInt8Array:
    pcm = _all_int16() >> 3  # 13-bit domain of the reference coder
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return np.asarray((code ^ mask) & 0xFF, dtype=np.uint8)


def _build_alaw_decode() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.asarray(np.where(a & 0x80, t, -t), dtype=np.int16)


def _readonly(arr: npt.NDArray[np.generic]) -> None:
    arr.setflags(write=False)


# Immutable codec tables (constants, not mutable module state).
_ULAW_ENC: UInt8Array = _build_ulaw_encode()
_ULAW_DEC: Int16Array = _build_ulaw_decode()
_ALAW_ENC: UInt8Array = _build_alaw_encode()
_ALAW_DEC: Int16Array = _build_alaw_decode()
# Transcoding goes through linear PCM (decode then encode), as a gateway would.
_ULAW_TO_ALAW: UInt8Array = _ALAW_ENC[_ULAW_DEC.view(np.uint16)]
_ALAW_TO_ULAW: UInt8Array = _ULAW_ENC[_ALAW_DEC.view(np.uint16)]
for _table in (_ULAW_ENC, _ULAW_DEC, _ALAW_ENC, _ALAW_DEC, _ULAW_TO_ALAW, _ALAW_TO_ULAW):
    _readonly(_table)
del _table


def _as_int16(pcm: npt.ArrayLike) -> Int16Array:
    if (
        isinstance(pcm, np.ndarray)
        and pcm.dtype == np.int16
        and pcm.ndim == 1
        and pcm.flags.c_contiguous
    ):
        return pcm  # the per-frame case: no copies, no reshapes
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 PCM, got {arr.dtype}")
    return np.ascontiguousarray(arr).reshape(-1)


def ulaw_decode(data: bytes | bytearray | memoryview) -> Int16Array:
    """Decode µ-law bytes to int16 PCM (one sample per byte)."""
    return _ULAW_DEC.take(np.frombuffer(data, dtype=np.uint8))


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode int16 PCM to µ-law bytes."""
    return _ULAW_ENC.take(_as_int16(pcm).view(np.uint16)).tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> Int16Array:
    """Decode A-law bytes to int16 PCM (one sample per byte)."""
    return _ALAW_DEC.take(np.frombuffer(data, dtype=np.uint8))


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    """Encode int16 PCM to A-law bytes."""
    return _ALAW_ENC.take(_as_int16(pcm).view(np.uint16)).tobytes()


def ulaw_to_alaw(data: bytes | bytearray | memoryview) -> bytes:
    """Transcode µ-law to A-law byte by byte (through linear PCM)."""
    return _ULAW_TO_ALAW[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_to_ulaw(data: bytes | bytearray | memoryview) -> bytes:
    """Transcode A-law to µ-law byte by byte (through linear PCM)."""
    return _ALAW_TO_ULAW[np.frombuffer(data, dtype=np.uint8)].tobytes()
