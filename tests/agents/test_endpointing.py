from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.audio import read_mulaw_wav
from voxgate.agents.endpointing import (
    BargeIn,
    Endpointer,
    EndpointerConfig,
    Event,
    SpeechEnd,
    SpeechPause,
    SpeechStart,
    State,
)
from voxgate.agents.vad import WINDOW_S, WINDOW_SAMPLES, SileroVad, VadStream
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
MANIFEST = json.loads((AUDIO / "manifest.json").read_text())


def _run(ep: Endpointer, probs: list[float]) -> list[Event]:
    events: list[Event] = []
    for i, p in enumerate(probs):
        w = np.full(WINDOW_SAMPLES, i % 1000, dtype=np.int16)
        events += ep.process(w, p)
    return events


def _windows(ms: float) -> int:
    return round(ms / 1000 / WINDOW_S)


def test_short_blip_is_not_speech() -> None:
    ep = Endpointer(EndpointerConfig(start_ms=128))
    events = _run(ep, [0.0] * 5 + [0.9] * 3 + [0.0] * 40)
    assert events == []
    assert ep.state is State.SILENCE


def test_start_end_and_preroll() -> None:
    cfg = EndpointerConfig(start_ms=128, min_silence_ms=400, preroll_ms=1000)
    ep = Endpointer(cfg)
    probs = [0.0] * 60 + [0.9] * 50 + [0.0] * 30
    events = _run(ep, probs)
    start, end = events
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    assert start.onset == pytest.approx(60 * WINDOW_S)
    assert start.at == pytest.approx(64 * WINDOW_S)
    assert end.end == pytest.approx(110 * WINDOW_S)
    # Decided within the bound after the last voiced window.
    assert 0 < end.at - end.end <= ep.worst_case_latency_s + 1e-9
    # At least the pre-roll before the onset is included, and all the speech.
    assert end.start - end.audio_start >= 1.0
    first = round(end.audio_start / WINDOW_S)
    assert end.audio[0] == first % 1000
    assert len(end.audio) / 16000 >= (end.end - end.audio_start)


def test_ambiguous_windows_keep_onset_but_count_as_silence_in_speech() -> None:
    ep = Endpointer(EndpointerConfig(start_ms=128))
    assert _run(ep, [0.9, 0.4, 0.9, 0.4, 0.9]) == []
    assert [type(e) for e in _run(ep, [0.9])] == [SpeechStart]
    # Noise hovering between the thresholds cannot hold the turn open.
    events = _run(ep, [0.4] * 20)
    assert [type(e) for e in events] == [SpeechEnd]


def test_short_pause_does_not_end_turn() -> None:
    ep = Endpointer(EndpointerConfig(min_silence_ms=400))
    events = _run(ep, [0.9] * 20 + [0.0] * _windows(300) + [0.9] * 20 + [0.0] * 20)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]


def test_max_utterance_bounds_worst_case() -> None:
    ep = Endpointer(EndpointerConfig(max_utterance_ms=2000))
    events = _run(ep, [0.9] * 200)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert ends and ends[0].reason == "max_length"
    assert ends[0].at - ends[0].start <= 2.0 + WINDOW_S


def test_barge_in_only_while_agent_speaks() -> None:
    ep = Endpointer(EndpointerConfig(barge_in_ms=192))
    assert not any(isinstance(e, BargeIn) for e in _run(ep, [0.9] * 20 + [0.0] * 20))
    ep = Endpointer(EndpointerConfig(barge_in_ms=192))
    ep.agent_speaking = True
    events = _run(ep, [0.0] * 5 + [0.9] * 10)
    barges = [e for e in events if isinstance(e, BargeIn)]
    assert len(barges) == 1
    assert barges[0].at - barges[0].onset == pytest.approx(6 * WINDOW_S)
    # A weak echo-like signal does not interrupt.
    ep = Endpointer()
    ep.agent_speaking = True
    assert not any(isinstance(e, BargeIn) for e in _run(ep, [0.55] * 40))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        EndpointerConfig(threshold=0.3, neg_threshold=0.5)
    with pytest.raises(ValueError):
        EndpointerConfig(min_silence_ms=0)


def test_pause_carries_the_final_audio() -> None:
    cfg = EndpointerConfig(min_silence_ms=400, speculative_ms=200, trailing_keep_ms=200)
    ep = Endpointer(cfg)
    events = _run(ep, [0.0] * 40 + [0.9] * 50 + [0.0] * 20)
    assert [type(e) for e in events] == [SpeechStart, SpeechPause, SpeechEnd]
    _, pause, end = events
    assert isinstance(pause, SpeechPause) and isinstance(end, SpeechEnd)
    assert pause.key == end.key
    assert np.array_equal(pause.audio, end.audio)
    # Emitted as soon as the pause is speculative_ms long, well before the end.
    assert 0.2 - 1e-9 <= pause.at - pause.end < 0.2 + WINDOW_S
    assert end.at - pause.at >= 0.15


def test_pause_then_more_speech_is_a_different_key() -> None:
    probs = [0.9] * 30 + [0.0] * _windows(250) + [0.9] * 20 + [0.0] * 20
    events = _run(Endpointer(EndpointerConfig(min_silence_ms=400, speculative_ms=200)), probs)
    pauses = [e for e in events if isinstance(e, SpeechPause)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(pauses) == 2 and len(ends) == 1  # one pause per silence run
    assert pauses[0].key != ends[0].key and pauses[1].key == ends[0].key
    # Earlier than trailing_keep_ms, the pause has less audio than the end: no match.
    events = _run(Endpointer(EndpointerConfig(speculative_ms=160, trailing_keep_ms=200)), probs)
    pause = [e for e in events if isinstance(e, SpeechPause)][-1]
    end = next(e for e in events if isinstance(e, SpeechEnd))
    assert pause.key != end.key and len(pause.audio) < len(end.audio)


def test_pause_disabled_by_default_and_when_not_shorter_than_min_silence() -> None:
    probs = [0.9] * 30 + [0.0] * 20
    assert not any(isinstance(e, SpeechPause) for e in _run(Endpointer(), probs))
    cfg = EndpointerConfig(min_silence_ms=200, speculative_ms=200)
    assert not any(isinstance(e, SpeechPause) for e in _run(Endpointer(cfg), probs))
    with pytest.raises(ValueError):
        EndpointerConfig(speculative_ms=-1)


def test_early_end_after_allow_early_end() -> None:
    cfg = EndpointerConfig(min_silence_ms=400, speculative_ms=200, early_silence_ms=320)
    ep = Endpointer(cfg)
    events = _run(ep, [0.9] * 30 + [0.0] * _windows(224))
    pause = events[-1]
    assert isinstance(pause, SpeechPause)
    assert ep.allow_early_end(pause.key) is None  # not yet 320 ms
    events = _run(ep, [0.0] * 20)
    end = events[0]
    assert isinstance(end, SpeechEnd) and end.reason == "early" and end.key == pause.key
    assert 0.32 - 1e-9 <= end.at - end.end < 0.32 + WINDOW_S


def test_early_end_at_once_when_the_pause_is_already_long_enough() -> None:
    cfg = EndpointerConfig(min_silence_ms=400, speculative_ms=200, early_silence_ms=320)
    ep = Endpointer(cfg)
    events = _run(ep, [0.9] * 30 + [0.0] * _windows(352))
    pause = next(e for e in events if isinstance(e, SpeechPause))
    assert not any(isinstance(e, SpeechEnd) for e in events)
    end = ep.allow_early_end(pause.key)
    assert end is not None and end.reason == "early" and end.at == pytest.approx(ep.now)
    assert np.array_equal(end.audio, pause.audio) and ep.state is State.SILENCE
    assert _run(ep, [0.0] * 20) == []  # nothing more for this turn


def test_early_end_is_dropped_when_the_caller_speaks_on() -> None:
    cfg = EndpointerConfig(min_silence_ms=400, speculative_ms=200, early_silence_ms=320)
    ep = Endpointer(cfg)
    events = _run(ep, [0.9] * 30 + [0.0] * _windows(224))
    pause = events[-1]
    assert isinstance(pause, SpeechPause)
    ep.allow_early_end(pause.key)
    # Speech resumes before 320 ms: the early end no longer applies to the next pause.
    events = _run(ep, [0.0] * 2 + [0.9] * 10 + [0.0] * 20)
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(ends) == 1 and ends[0].reason == "silence"
    assert ends[0].at - ends[0].end <= ep.worst_case_latency_s + 1e-9
    # A stale key never ends a turn early.
    ep.allow_early_end(pause.key)
    events = _run(ep, [0.9] * 20 + [0.0] * 20)
    assert [e.reason for e in events if isinstance(e, SpeechEnd)] == ["silence"]


def _detect(name: str, pad_s: float = 1.0, config: EndpointerConfig | None = None) -> list[Event]:
    pcm = ulaw_decode(read_mulaw_wav(AUDIO / name))
    pcm = np.concatenate([pcm, np.zeros(int(pad_s * 8000), dtype=np.int16)])
    res = StreamResampler(8000, 16000)
    stream = VadStream(SileroVad())
    ep = Endpointer(config)
    events: list[Event] = []
    for i in range(0, len(pcm), 160):  # 20 ms frames as they arrive on a call
        for window, p in stream.feed(res.process(pcm[i : i + 160])):
            events += ep.process(window, p)
    return events


@pytest.mark.parametrize(
    "entry", [e for e in MANIFEST if e["kind"] in ("phrase", "noisy")], ids=lambda e: e["name"]
)
def test_fixture_bounds(entry: dict[str, object]) -> None:
    events = _detect(str(entry["file"]))
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == 1 and len(ends) == 1, events
    s, e = float(entry["speech_start_s"]), float(entry["speech_end_s"])  # type: ignore[arg-type]
    assert abs(ends[0].start - s) <= 0.1
    # Noise (15 dB SNR) keeps the tail voiced a little longer; Silero's scores also vary
    # by a window between runs.
    assert abs(ends[0].end - e) <= (0.2 if entry["kind"] == "noisy" else 0.15)
    # No clipping: the audio handed to STT starts >= 0.3 s before the speech does
    # (or at the very start of the stream) and reaches past its end.
    assert ends[0].audio_start <= max(0.0, s - 0.3)
    assert ends[0].audio_start + len(ends[0].audio) / 16000 >= e
    # Endpointing delay is bounded.
    assert ends[0].at - ends[0].end <= Endpointer().worst_case_latency_s + 1e-9


def test_conversation_turns() -> None:
    entry = next(e for e in MANIFEST if e["kind"] == "conversation")
    ends = [e for e in _detect(entry["file"]) if isinstance(e, SpeechEnd)]
    assert len(ends) == len(entry["turns"])
    for got, turn in zip(ends, entry["turns"], strict=True):
        assert abs(got.start - turn["start_s"]) <= 0.1
        assert abs(got.end - turn["end_s"]) <= 0.15
        assert got.start - got.audio_start >= 1.0 or got.audio_start == 0.0


def test_speculative_pause_matches_every_fixture_end() -> None:
    # Every turn of every speech fixture: the last pause before the end carries exactly
    # the final audio, so a speculative decode is always reusable at the real end.
    cfg = EndpointerConfig(speculative_ms=200)
    turns = wasted = 0
    for entry in [e for e in MANIFEST if e["kind"] in ("phrase", "noisy", "conversation")]:
        last_pause: SpeechPause | None = None
        for event in _detect(str(entry["file"]), config=cfg):
            if isinstance(event, SpeechPause):
                wasted += last_pause is not None
                last_pause = event
            elif isinstance(event, SpeechEnd):
                assert last_pause is not None and last_pause.key == event.key, entry["name"]
                assert np.array_equal(last_pause.audio, event.audio)
                turns += 1
                last_pause = None
    assert turns == 19
    # Pauses inside turns (the longest in the fixtures is ~256 ms) waste a decode.
    assert wasted <= 3
