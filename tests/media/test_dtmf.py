from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxgate.media.dtmf import DtmfError, DtmfEvent, DtmfSource, GoertzelDtmfDetector
from voxgate.media.wavfile import read_wav

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"


def _detect(pcm: np.ndarray, chunk: int) -> list[DtmfEvent]:
    detector = GoertzelDtmfDetector()
    events: list[DtmfEvent] = []
    for i in range(0, len(pcm), chunk):
        events += detector.feed(pcm[i : i + chunk])
    return events + detector.flush()


@pytest.mark.parametrize("chunk", [160, 37, 1000])
def test_fixture_digits_detected(chunk: int) -> None:
    manifest = json.loads((AUDIO / "manifest.json").read_text())
    entry = next(e for e in manifest if e["kind"] == "dtmf")
    audio = read_wav(AUDIO / "dtmf_1234#.wav")
    assert audio.sample_rate == 8000
    events = _detect(audio.mono, chunk)
    assert "".join(e.digit for e in events) == "1234#" == entry["digits"]
    for event, tone in zip(events, entry["tones"], strict=True):
        assert event.source is DtmfSource.INBAND
        assert abs(event.duration - (tone["end_s"] - tone["start_s"])) <= 0.03


@pytest.mark.parametrize("name", ["book_appointment", "conversation", "order_number_4572.noisy"])
def test_speech_gives_no_false_digits(name: str) -> None:
    assert _detect(read_wav(AUDIO / f"{name}.wav").mono, 160) == []


def _tone(freqs: tuple[float, float], ms: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(8 * ms) / 8000
    return (
        level * 32767 * (np.sin(2 * np.pi * freqs[0] * t) + np.sin(2 * np.pi * freqs[1] * t)) / 2
    ).astype(np.int16)


def test_every_key_synthetic() -> None:
    rows, cols = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    keys = ("123A", "456B", "789C", "*0#D")
    gap = np.zeros(400, dtype=np.int16)
    parts = []
    expected = ""
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            parts += [_tone((row, col), 60), gap]
            expected += keys[r][c]
    assert "".join(e.digit for e in _detect(np.concatenate(parts), 160)) == expected


def test_single_tone_and_quiet_tone_rejected() -> None:
    t = np.arange(800) / 8000
    single = (10000 * np.sin(2 * np.pi * 697 * t)).astype(np.int16)
    assert _detect(single, 160) == []
    assert _detect(_tone((697, 1209), 100, level=0.001), 160) == []


def test_event_validation() -> None:
    with pytest.raises(DtmfError):
        DtmfEvent("x", 0.1, DtmfSource.TWILIO)
    with pytest.raises(DtmfError):
        DtmfEvent("1", -1.0, DtmfSource.TWILIO)
    with pytest.raises(DtmfError):
        GoertzelDtmfDetector().feed(np.zeros(10, dtype=np.float64))
