from __future__ import annotations

import time

import numpy as np
import pytest

from tests.agents.test_stt import wer, words
from voxgate.agents.stt import SpeechRecognizer
from voxgate.agents.tts import FRAME_BYTES, SpeechSynthesizer, TtsConfig, split_sentences
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler


@pytest.fixture(scope="module")
def tts() -> SpeechSynthesizer:
    return SpeechSynthesizer()


def test_split_sentences() -> None:
    assert split_sentences("Hi there. How are you? Fine!") == ["Hi there.", "How are you?", "Fine!"]
    long = "We open at eight, we close at six, and on Saturdays we open at ten, closing at two."
    pieces = split_sentences(long, max_chars=40)
    assert len(pieces) > 1 and all(len(p) <= 40 for p in pieces)
    assert " ".join(pieces) == long
    assert split_sentences("   ") == []


def test_split_first_piece_at_clause_break() -> None:
    text = "Hello, thanks for calling the front desk. How can I help?"
    pieces = split_sentences(text, first_max_chars=30)
    assert pieces == ["Hello,", "thanks for calling the front desk.", "How can I help?"]
    assert " ".join(pieces) == text
    # Short first sentences and sentences without clause breaks stay whole.
    assert split_sentences("Hi, there. Bye.", first_max_chars=30) == ["Hi, there.", "Bye."]
    plain = "We open at eight and close at six every single day."
    assert split_sentences(plain, first_max_chars=10) == [plain]
    # Only the first piece is affected.
    assert split_sentences("Sure. One, two, three, four, five.", first_max_chars=3)[1:] == [
        "One, two, three, four, five."
    ]


def test_streams_whole_frames_per_sentence(tts: SpeechSynthesizer) -> None:
    chunks = list(tts.synthesize_ulaw("Thanks for calling. How can I help you today?"))
    assert [c[0] for c in chunks] == ["Thanks for calling.", "How can I help you today?"]
    for _, data in chunks:
        assert data and len(data) % FRAME_BYTES == 0
    seconds = sum(len(d) for _, d in chunks) / 8000
    assert 1.5 < seconds < 6


def test_first_chunk_before_whole_reply(tts: SpeechSynthesizer) -> None:
    text = "Hello. " + "This is a much longer second sentence that takes a while to render. " * 3
    stream = tts.stream()
    started = time.perf_counter()
    first = stream.piece("Hello.")
    first_s = time.perf_counter() - started
    for piece in split_sentences(text)[1:]:
        stream.piece(piece)
    total_s = time.perf_counter() - started
    assert first and stream.first_chunk_s is not None
    assert first_s < total_s / 2


def test_round_trip_through_stt(tts: SpeechSynthesizer) -> None:
    text = "Hello, thanks for calling. We open at eight and close at six."
    ulaw = tts.synthesize_all(text)
    res = StreamResampler(8000, 16000)
    pcm = ulaw_decode(ulaw)
    audio = np.concatenate([res.process(pcm), res.flush()])
    heard = SpeechRecognizer().transcribe(audio, beam_size=5).text
    # Piper adds random noise per run, so tiny.en occasionally mishears a short word
    # ("and" -> "in"); the words that carry the message must all be there.
    assert wer(text, heard) <= 0.25, heard
    assert {"thanks", "calling", "open", "eight", "close", "six"} <= set(words(heard)), heard


def test_settings_key_changes_with_settings() -> None:
    a = SpeechSynthesizer()
    b = SpeechSynthesizer(config=TtsConfig(length_scale=1.2))
    assert a.settings_key != b.settings_key
    assert a.settings_key == SpeechSynthesizer().settings_key


def test_empty_text(tts: SpeechSynthesizer) -> None:
    assert tts.synthesize_all("") == b""
