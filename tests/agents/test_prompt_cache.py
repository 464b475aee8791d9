from __future__ import annotations

import time
from pathlib import Path

import pytest

from voxgate.agents.prompt_cache import (
    PromptCache,
    PromptCacheError,
    build_for_flow,
    prompt_dir,
)
from voxgate.agents.tts import SpeechSynthesizer


@pytest.fixture(scope="module")
def synth() -> SpeechSynthesizer:
    return SpeechSynthesizer()


def test_build_then_instant_hits(tmp_path: Path, synth: SpeechSynthesizer) -> None:
    texts = ["Hello, thanks for calling.", "Hello,  thanks for calling. ", "Goodbye."]
    report = build_for_flow(texts, synth, tmp_path, "tenant-1")
    assert report.synthesized == 2 and report.already_cached == 0
    files = sorted((tmp_path / "blobs" / "tenant-1" / "prompts").glob("*.ulaw"))
    assert len(files) == 2
    again = build_for_flow(texts, synth, tmp_path, "tenant-1")
    assert again.synthesized == 0 and again.already_cached == 2

    # A fresh cache (another worker) reads from disk, then from memory.
    cache = PromptCache(prompt_dir(tmp_path, "tenant-1"), synth.settings_key)
    started = time.perf_counter()
    audio = cache.get("Hello, thanks for calling.")
    assert audio is not None and len(audio) % 160 == 0 and len(audio) > 8000
    assert time.perf_counter() - started < 0.05
    assert cache.get("Hello, thanks for calling.") is audio
    assert cache.get("Never rendered.") is None
    assert (cache.hits, cache.misses) == (2, 1)


def test_key_depends_on_voice_settings(tmp_path: Path) -> None:
    a = PromptCache(tmp_path, "voice-a")
    b = PromptCache(tmp_path, "voice-b")
    assert a.key("Hi.") != b.key("Hi.")
    assert a.key("Hi.") == a.key(" Hi. ")


def test_bad_input_is_typed(tmp_path: Path, synth: SpeechSynthesizer) -> None:
    cache = PromptCache(tmp_path, "v")
    with pytest.raises(PromptCacheError):
        cache.put("x", b"\xff" * 100)
    (tmp_path / f"{cache.key('y')}.ulaw").write_bytes(b"\xff" * 7)
    with pytest.raises(PromptCacheError):
        cache.get("y")
    with pytest.raises(PromptCacheError):
        prompt_dir(tmp_path, "../escape")
    with pytest.raises(PromptCacheError):
        cache.build(["Hi."], synth)  # voice key mismatch


def test_memory_is_bounded(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, "v", max_memory_bytes=1600)
    for i in range(5):
        cache.put(f"t{i}", b"\xff" * 800)
    assert cache._memory_bytes <= 1600
    assert cache.get("t0") == b"\xff" * 800  # evicted from memory, still on disk
