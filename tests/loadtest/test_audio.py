"""Fixture loading, µ-law WAV round trip, speech detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loadtest.audio import (
    MULAW_SILENCE,
    AudioFixtureError,
    CallerAudio,
    FixtureLibrary,
    SpeechDetector,
    Utterance,
    read_mulaw_wav,
    write_mulaw_wav,
)

AUDIO_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"


@pytest.fixture(scope="module")
def library() -> FixtureLibrary:
    return FixtureLibrary(AUDIO_DIR)


def test_phrase_loads_with_manifest_bounds(library: FixtureLibrary) -> None:
    audio = library.load("book_appointment")
    assert audio.duration_s == pytest.approx(3.983, abs=0.01)
    assert audio.utterances == (
        Utterance(0.32, 3.16, "Hi, I'd like to book an appointment for tomorrow morning."),
    )
    # ~300 ms of digital silence before the speech, as the README says.
    assert set(audio.payload[:2000]) == {MULAW_SILENCE}


def test_conversation_has_four_turns(library: FixtureLibrary) -> None:
    audio = library.load("conversation")
    assert [u.end_s for u in audio.utterances] == [3.16, 7.66, 12.08, 15.54]


def test_dtmf_fixture_lists_tones(library: FixtureLibrary) -> None:
    audio = library.load("dtmf_1234#")
    assert "".join(t.digit for t in audio.dtmf) == "1234#"
    assert audio.utterances == ()


def test_unknown_name_is_a_typed_error(library: FixtureLibrary) -> None:
    with pytest.raises(AudioFixtureError, match="unknown audio"):
        library.load("nope")


def test_sequence_shifts_bounds(library: FixtureLibrary) -> None:
    a = library.load("goodbye")
    b = library.load("yes_that_works")
    seq = library.sequence(["goodbye", "yes_that_works"], gap_s=1.0)
    assert len(seq.payload) == len(a.payload) + 8000 + len(b.payload)
    second = seq.utterances[1]
    assert second.end_s == pytest.approx(a.duration_s + 1.0 + b.utterances[0].end_s)


def test_padding_and_truncation() -> None:
    audio = CallerAudio(name="x", payload=b"\x10" * 800, utterances=(Utterance(0.02, 0.08),))
    padded = audio.padded(0.5, 0.25)
    assert len(padded.payload) == 4000 + 800 + 2000
    assert padded.utterances[0].start_s == pytest.approx(0.52)
    cut = padded.truncated(0.55)
    assert len(cut.payload) == 4400
    assert cut.utterances == ()  # speech cut off by the end is not a turn
    with pytest.raises(AudioFixtureError):
        audio.padded(-1, 0)


def test_wav_round_trip(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3 + b"\x01"  # odd length: pad byte
    path = tmp_path / "x.wav"
    write_mulaw_wav(path, payload)
    assert read_mulaw_wav(path) == payload


def test_reader_rejects_pcm(tmp_path: Path) -> None:
    with pytest.raises(AudioFixtureError, match="µ-law"):
        read_mulaw_wav(AUDIO_DIR / "goodbye.pcm16k.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioFixtureError):
        read_mulaw_wav(bad)
    with pytest.raises(AudioFixtureError):
        read_mulaw_wav(tmp_path / "missing.wav")


def test_speech_detector(library: FixtureLibrary) -> None:
    det = SpeechDetector(-50.0)
    audio = library.load("book_appointment")
    assert not det.is_speech(audio.payload[:160])
    assert det.is_speech(audio.payload[8000:8160])
    assert not det.is_speech(b"")


def test_speech_detector_fast_paths_agree_with_rms(library: FixtureLibrary) -> None:
    det = SpeechDetector(-50.0)
    rng = np.random.default_rng(7)
    chunks = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(2000)]
    payload = library.load("conversation").payload
    chunks += [payload[i : i + 160] for i in range(0, len(payload) - 160, 160)]
    # Quiet noise around the threshold: a mix of codes just above and below it.
    chunks += [bytes(rng.choice([0xFF, 0xFE, 0xF0, 0xE8, 0xE0], 160)) for _ in range(2000)]
    for chunk in chunks:
        assert det.is_speech(chunk) == (det.level_dbfs(chunk) >= -50.0)
