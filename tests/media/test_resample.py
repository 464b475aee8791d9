from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voxgate.media.resample import ResampleError, StreamResampler


def _sine(freq: float, rate: int, seconds: float, amp: float = 12000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def _run(
    resampler: StreamResampler, pcm: npt.NDArray[np.int16], chunk: int
) -> npt.NDArray[np.int16]:
    parts = [resampler.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    parts.append(resampler.flush())
    return np.concatenate(parts)


def _peak_hz(pcm: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "chunk"),
    [(8000, 16000, 160), (16000, 8000, 320), (22050, 8000, 441), (22050, 8000, 1000)],
)
def test_chunked_equals_one_shot(in_rate: int, out_rate: int, chunk: int) -> None:
    pcm = _sine(440.0, in_rate, 1.0)
    chunked = _run(StreamResampler(in_rate, out_rate), pcm, chunk)
    whole = _run(StreamResampler(in_rate, out_rate), pcm, len(pcm))
    assert abs(len(chunked) - len(whole)) <= 1
    n = min(len(chunked), len(whole))
    # Same filter state carried over -> equal up to int16 rounding.
    assert np.abs(chunked[:n].astype(np.int32) - whole[:n]).max() <= 4
    assert abs(len(whole) - out_rate) <= 2


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [(8000, 16000, 1000.0), (16000, 8000, 1000.0), (22050, 8000, 697.0), (16000, 8000, 3000.0)],
)
def test_sine_frequency_preserved(in_rate: int, out_rate: int, freq: float) -> None:
    out = _run(StreamResampler(in_rate, out_rate), _sine(freq, in_rate, 1.0), 160)
    assert abs(_peak_hz(out[: out_rate // 2 * 2], out_rate) - freq) <= 2.0
    # Amplitude kept in the pass band.
    steady = out[out_rate // 10 : -out_rate // 10]
    assert 0.9 * 12000 <= np.abs(steady).max() <= 1.1 * 12000


def test_no_click_at_chunk_boundaries() -> None:
    out = _run(StreamResampler(8000, 16000), _sine(300.0, 8000, 0.5), 160)
    steady = out[800:-800].astype(np.int32)
    # A 300 Hz sine at 16 kHz moves at most 2*pi*300/16000*amp per sample.
    assert np.abs(np.diff(steady)).max() <= 2 * np.pi * 300 / 16000 * 12000 * 1.1


def test_downsampling_removes_content_above_nyquist() -> None:
    out = _run(StreamResampler(16000, 8000), _sine(6000.0, 16000, 0.5), 320)
    assert np.abs(out[400:-400]).max() < 200


def test_equal_rates_pass_through() -> None:
    pcm = _sine(440.0, 8000, 0.1)
    r = StreamResampler(8000, 8000)
    assert np.array_equal(r.process(pcm), pcm)
    assert r.flush().size == 0


def test_misuse_is_typed_error() -> None:
    with pytest.raises(ResampleError):
        StreamResampler(0, 8000)
    r = StreamResampler(8000, 16000)
    with pytest.raises(ResampleError):
        r.process(np.zeros(160, dtype=np.float32))
    r.flush()
    with pytest.raises(ResampleError):
        r.process(np.zeros(160, dtype=np.int16))
