from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.audio import read_mulaw_wav
from voxgate.agents.vad import (
    WINDOW_SAMPLES,
    SharedSilero,
    SileroVad,
    VadError,
    VadPool,
    VadStream,
)
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"


def _pcm16k(name: str) -> np.ndarray:
    pcm = ulaw_decode(read_mulaw_wav(AUDIO / name))
    r = StreamResampler(8000, 16000)
    return np.concatenate([r.process(pcm), r.flush()])


def test_silence_scores_low_and_speech_high() -> None:
    vad = SileroVad()
    stream = VadStream(vad)
    silence = stream.feed(np.zeros(WINDOW_SAMPLES * 10, dtype=np.int16))
    assert len(silence) == 10
    assert max(p for _, p in silence) < 0.2
    vad.reset()
    entry = json.loads((AUDIO / "manifest.json").read_text())[0]
    pcm = _pcm16k(entry["file"])
    s0, s1 = int(entry["speech_start_s"] * 16000), int(entry["speech_end_s"] * 16000)
    scores = VadStream(vad).feed(pcm[s0:s1])
    voiced = sum(p >= 0.5 for _, p in scores) / len(scores)
    assert voiced > 0.8


def test_stream_keeps_remainder_across_chunks() -> None:
    stream = VadStream(SileroVad())
    assert stream.feed(np.zeros(300, dtype=np.int16)) == []
    out = stream.feed(np.zeros(300, dtype=np.int16))
    assert len(out) == 1 and out[0][0].shape == (WINDOW_SAMPLES,)


def test_wrong_window_is_a_typed_error() -> None:
    with pytest.raises(VadError):
        SileroVad().probability(np.zeros(100, dtype=np.int16))


def test_bad_model_path_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "vad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(VadError):
        SileroVad(bad)


def test_pool_reuses_and_resets() -> None:
    pool = VadPool(prewarm=1)
    a = pool.acquire()
    b = pool.acquire()
    assert pool.created == 2 and a is not b
    pool.release(a)
    assert pool.acquire() is a


@pytest.mark.parametrize("name", ["book_appointment.wav", "goodbye.wav"])
def test_shared_session_matches_native_instances(name: str) -> None:
    pcm = _pcm16k(name)
    native = [p for _, p in VadStream(SileroVad()).feed(pcm)]
    shared = SharedSilero()
    # Two calls interleaved on one session keep separate state.
    a, b = VadStream(shared.stream()), VadStream(shared.stream())
    got_a: list[float] = []
    got_b: list[float] = []
    for i in range(0, len(pcm), 4000):
        got_a += [p for _, p in a.feed(pcm[i : i + 4000])]
        got_b += [p for _, p in b.feed(pcm[i : i + 4000])]
    assert len(got_a) == len(native) > 20
    assert max(abs(x - y) for x, y in zip(native, got_a, strict=True)) < 1e-4
    assert got_a == got_b
    assert max(native) > 0.9


def test_shared_pool_streams_reset_between_calls() -> None:
    pool = VadPool(prewarm=2, shared=True)
    pcm = _pcm16k("goodbye.wav")
    vad = pool.acquire()
    first = [p for _, p in VadStream(vad).feed(pcm)]
    pool.release(vad)
    again = pool.acquire()
    assert again is vad
    assert [p for _, p in VadStream(again).feed(pcm)] == first
    with pytest.raises(VadError):
        again.probability(np.zeros(100, dtype=np.int16))


def test_shared_bad_model_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "vad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(VadError):
        SharedSilero(bad)
