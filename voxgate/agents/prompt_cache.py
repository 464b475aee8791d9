"""Pre-rendered static prompts: synthesized once, played instantly.

A flow's constant texts (greetings, ``say`` nodes, re-prompts) are rendered at
publish time and stored as 8 kHz µ-law files named by a content hash of the text
and the voice + settings key, under ``<data-dir>/blobs/<tenant>/prompts/``. A worker
reads them on first use and keeps a bounded in-memory copy.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from voxgate.agents.tts import FRAME_BYTES, SpeechSynthesizer

_TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class PromptCacheError(Exception):
    """A prompt file is unusable or the cache location is invalid."""


def prompt_dir(data_dir: Path, tenant_id: str) -> Path:
    """Where a tenant's rendered prompts live."""
    if not _TENANT_ID.match(tenant_id):
        raise PromptCacheError(f"invalid tenant id {tenant_id!r}")
    return data_dir / "blobs" / tenant_id / "prompts"


def normalize_text(text: str) -> str:
    # Whitespace differences must not create a second copy of the same prompt.
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class BuildReport:
    synthesized: int
    already_cached: int
    bytes_written: int


class PromptCache:
    """Prompt audio for one voice + settings key in one directory (thread-safe)."""

    def __init__(
        self, directory: Path, voice_key: str, *, max_memory_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.directory = directory
        self.voice_key = voice_key
        self._max_memory = max_memory_bytes
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> str:
        blob = f"{self.voice_key}\0{normalize_text(text)}".encode()
        return hashlib.sha256(blob).hexdigest()

    def path(self, text: str) -> Path:
        return self.directory / f"{self.key(text)}.ulaw"

    def get(self, text: str) -> bytes | None:
        """The prompt's µ-law audio, or None if it was never rendered."""
        key = self.key(text)
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return data
        try:
            data = (self.directory / f"{key}.ulaw").read_bytes()
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        except OSError as exc:
            raise PromptCacheError(f"cannot read prompt {key}: {exc}") from exc
        if not data or len(data) % FRAME_BYTES:
            raise PromptCacheError(f"prompt file {key}.ulaw is not whole 20 ms frames")
        with self._lock:
            self.hits += 1
        self._remember(key, data)
        return data

    def put(self, text: str, ulaw: bytes) -> Path:
        """Store rendered audio (atomically: a reader never sees half a file)."""
        if not ulaw or len(ulaw) % FRAME_BYTES:
            raise PromptCacheError("prompt audio must be whole 20 ms µ-law frames")
        key = self.key(text)
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{key}.ulaw"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".ulaw")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ulaw)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._remember(key, ulaw)
        return target

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self._max_memory:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_bytes -= len(old)
            self._memory[key] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > self._max_memory:
                _, evicted = self._memory.popitem(last=False)
                self._memory_bytes -= len(evicted)

    def build(self, texts: Iterable[str], synth: SpeechSynthesizer) -> BuildReport:
        """Render every text not yet on disk (blocking; run at publish time)."""
        if synth.settings_key != self.voice_key:
            raise PromptCacheError("synthesizer does not match this cache's voice key")
        made = cached = written = 0
        for text in dict.fromkeys(normalize_text(t) for t in texts if t.strip()):
            if self.path(text).is_file():
                cached += 1
                continue
            audio = synth.synthesize_all(text)
            if not audio:
                continue
            self.put(text, audio)
            made += 1
            written += len(audio)
        return BuildReport(synthesized=made, already_cached=cached, bytes_written=written)


def build_for_flow(
    texts: Iterable[str], synth: SpeechSynthesizer, data_dir: Path, tenant_id: str
) -> BuildReport:
    """Render a published flow's static prompts (see ``flowspec.static_prompts``)."""
    cache = PromptCache(prompt_dir(data_dir, tenant_id), synth.settings_key)
    return cache.build(texts, synth)
