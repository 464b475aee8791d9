from __future__ import annotations

import numpy as np
import pytest

from voxgate.media import g711
from voxgate.media.frame import (
    FRAME_BYTES_ULAW,
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Frame,
    FrameError,
)


def test_constants() -> None:
    assert (SAMPLE_RATE, FRAME_MS, FRAME_SAMPLES, FRAME_BYTES_ULAW) == (8000, 20, 160, 160)


def test_silence_encodes_to_ulaw_zero_code() -> None:
    frame = Frame.silence()
    assert frame.pcm.shape == (160,) and frame.is_silent()
    assert frame.to_ulaw() == b"\xff" * 160 == Frame.ulaw_silence()


def test_ulaw_round_trip() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
    frame = Frame.from_ulaw(data)
    assert np.array_equal(frame.pcm, g711.ulaw_decode(data))
    # Decoding then encoding is lossless on µ-law codes (bar the negative zero).
    assert Frame.from_ulaw(frame.to_ulaw()) == frame


def test_alaw_round_trip() -> None:
    data = bytes(range(160))
    assert Frame.from_alaw(data).to_alaw() == data


@pytest.mark.parametrize("size", [0, 159, 161, 320])
def test_wrong_ulaw_length_is_typed_error(size: int) -> None:
    with pytest.raises(FrameError):
        Frame.from_ulaw(b"\xff" * size)


def test_wrong_shape_or_dtype_rejected() -> None:
    with pytest.raises(FrameError):
        Frame(np.zeros(160, dtype=np.float32))
    with pytest.raises(FrameError):
        Frame(np.zeros(161, dtype=np.int16))
    with pytest.raises(FrameError):
        Frame(np.zeros(160, dtype=np.int16), sample_rate=22051)


def test_wideband_frame_cannot_be_g711_encoded() -> None:
    frame = Frame.silence(16000)
    assert frame.pcm.shape == (320,)
    with pytest.raises(FrameError):
        frame.to_ulaw()


def test_slots_no_dict() -> None:
    assert not hasattr(Frame.silence(), "__dict__")
