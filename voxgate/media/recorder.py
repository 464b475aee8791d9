"""Per-call stereo recordings: caller on the left, agent on the right.

Two parts:

* ``StereoAligner`` (sans-IO) places each side's audio on one frame clock
  started when the call connects. A side that falls silent (agent not
  talking, caller stream stalled) is padded with silence up to the clock, so
  the two channels stay aligned to when audio was actually heard/sent, and
  memory stays bounded whatever one side does.
* ``RecordingWriter`` owns one writer thread that does all file I/O for many
  calls, so the event loop never blocks on disk. The loop hands it interleaved
  PCM chunks through a bounded queue; if the disk cannot keep up, chunks are
  dropped and counted rather than growing memory without bound.

``CallRecorder`` ties the two together for one call.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import re
import struct
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.media import g711
from voxgate.media.frame import SAMPLE_RATE

__all__ = [
    "CallRecorder",
    "RecorderError",
    "RecordingInfo",
    "RecordingWriter",
    "StereoAligner",
    "recording_path",
]

_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_ULAW_SILENCE = b"\xff"
# µ-law code -> int16 sample; ``take`` on it decodes a whole buffer several
# times faster than fancy indexing with a uint8 index array.
_ULAW_TABLE = g711.ulaw_decode(bytes(range(256)))


class RecorderError(Exception):
    """Bad recording path, writer closed, or file I/O failure."""


def recording_path(data_dir: Path, tenant_id: str, call_id: str) -> Path:
    """``<data_dir>/blobs/<tenant>/recordings/<call_id>.wav``, refusing path tricks."""
    for part in (tenant_id, call_id):
        if not _SAFE_COMPONENT.match(part) or part in {".", ".."}:
            raise RecorderError(f"unsafe path component: {part!r}")
    return data_dir / "blobs" / tenant_id / "recordings" / f"{call_id}.wav"


class StereoAligner:
    """Align caller and agent audio on one sample clock; emit interleaved PCM.

    ``now`` is monotonic seconds; ``start`` is when the call connected. Audio
    is committed once both channels have it or once it is older than
    ``max_lag`` (the other side is then silence).

    Audio comes as int16 PCM (``add``) or as 8-bit µ-law (``add_ulaw``, what
    telephony transports carry). µ-law is kept as bytes until ``take`` and
    decoded there in one pass per channel: decoding every 20 ms frame on its
    own cost more than everything else a frame does on the media path.
    """

    __slots__ = ("_cursor", "_emitted", "_max_lag", "_pending", "_rate", "_slack", "_start")

    def __init__(
        self,
        start: float,
        sample_rate: int = SAMPLE_RATE,
        *,
        max_lag: float = 0.5,
        slack: float = 0.060,
    ) -> None:
        self._start = start
        self._rate = sample_rate
        self._max_lag = int(max_lag * sample_rate)
        # Jitter allowance before a late side is padded to the clock.
        self._slack = int(slack * sample_rate)
        # Per channel: absolute sample index of the next sample, pending chunks
        # (int16 PCM arrays or µ-law bytes, one sample per byte).
        self._cursor = [0, 0]
        self._pending: list[list[npt.NDArray[np.int16] | bytes]] = [[], []]
        self._emitted = 0

    def _clock(self, now: float) -> int:
        return max(0, int((now - self._start) * self._rate))

    def add(self, channel: int, pcm: npt.NDArray[np.int16], now: float) -> None:
        """Add audio for channel 0 (caller) or 1 (agent) that was heard/sent at ``now``."""
        self._add(channel, pcm, now)

    def add_ulaw(self, channel: int, ulaw: bytes, now: float) -> None:
        """``add`` for µ-law bytes (decoded later, in bulk)."""
        self._add(channel, ulaw, now)

    def _add(self, channel: int, chunk: npt.NDArray[np.int16] | bytes, now: float) -> None:
        if channel not in (0, 1):
            raise RecorderError("channel must be 0 (caller) or 1 (agent)")
        size = len(chunk)
        cursor = self._cursor
        # ``_clock`` inlined (once per frame per side); a negative clock only
        # makes the gap more negative, so its clamp to 0 is not needed here.
        gap = int((now - self._start) * self._rate) - size - cursor[channel]
        if gap > self._slack:
            self._pad(channel, gap)
        self._pending[channel].append(chunk)
        cursor[channel] += size

    def _pad(self, channel: int, samples: int) -> None:
        # µ-law 0xFF is linear zero: padding joins the bytes of its neighbours.
        self._pending[channel].append(_ULAW_SILENCE * samples)
        self._cursor[channel] += samples

    def take(self, now: float, *, final: bool = False) -> bytes:
        """Interleaved stereo PCM16 ready to write (may be empty)."""
        if final:
            target = max(self._cursor)
        else:
            target = max(min(self._cursor), self._clock(now) - self._max_lag)
        for channel in (0, 1):
            if self._cursor[channel] < target:
                self._pad(channel, target - self._cursor[channel])
        count = target - self._emitted
        if count <= 0:
            return b""
        self._emitted = target
        left, right = self._pending
        if all(isinstance(c, bytes) for c in left) and all(isinstance(c, bytes) for c in right):
            # The telephony case: interleave the µ-law bytes, decode once.
            codes = np.empty((count, 2), dtype=np.uint8)
            codes[:, 0] = np.frombuffer(self._consume_ulaw(0, count), dtype=np.uint8)
            codes[:, 1] = np.frombuffer(self._consume_ulaw(1, count), dtype=np.uint8)
            return bytes(_ULAW_TABLE.take(codes).tobytes())
        out = np.empty((count, 2), dtype=np.int16)
        for channel in (0, 1):
            out[:, channel] = self._consume(channel, count)
        return out.tobytes()

    def _consume_ulaw(self, channel: int, count: int) -> bytes:
        data = b"".join(c for c in self._pending[channel] if isinstance(c, bytes))
        self._pending[channel] = [data[count:]] if len(data) > count else []
        return data[:count]

    def _consume(self, channel: int, count: int) -> npt.NDArray[np.int16]:
        chunks = self._pending[channel]
        arrays = [
            _ULAW_TABLE.take(np.frombuffer(c, dtype=np.uint8)) if isinstance(c, bytes) else c
            for c in chunks
        ]
        joined = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        head, rest = joined[:count], joined[count:]
        self._pending[channel] = [rest] if len(rest) else []
        return head


class RecordingInfo:
    """Result of a finished recording."""

    __slots__ = ("bytes_written", "dropped_chunks", "duration", "path")

    def __init__(self, path: Path, bytes_written: int, dropped_chunks: int) -> None:
        self.path = path
        self.bytes_written = bytes_written
        self.dropped_chunks = dropped_chunks
        self.duration = bytes_written / 4 / SAMPLE_RATE


_Command = tuple[str, int, object]


class RecordingWriter:
    """One background thread writing stereo 8 kHz WAVs for many calls.

    Create one per process (in the server wiring), ``close()`` at shutdown.
    """

    def __init__(self, max_pending_bytes: int = 32 * 1024 * 1024) -> None:
        # Unbounded queue type, but bounded content: audio is refused past
        # ``max_pending_bytes``; open/finish commands are a few per call.
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._max_pending = max_pending_bytes
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._next_id = 0
        self._dropped: dict[int, int] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
        self._thread.start()

    def open(self, path: Path) -> int:
        """Start a recording file; returns its handle. Never blocks on disk."""
        with self._lock:
            if self._closed:
                raise RecorderError("recording writer is closed")
            handle = self._next_id
            self._next_id += 1
            self._dropped[handle] = 0
        self._queue.put(("open", handle, path))
        return handle

    def write(self, handle: int, stereo_pcm: bytes) -> bool:
        """Queue interleaved PCM16; False (and counted) when the disk is too far behind."""
        if not stereo_pcm:
            return True
        with self._lock:
            if self._closed:
                return False
            if self._pending_bytes + len(stereo_pcm) > self._max_pending:
                self._dropped[handle] = self._dropped.get(handle, 0) + 1
                return False
            self._pending_bytes += len(stereo_pcm)
        self._queue.put(("write", handle, stereo_pcm))
        return True

    def finish(self, handle: int) -> concurrent.futures.Future[RecordingInfo]:
        """Close the file; the future resolves (in the writer thread) when it is on disk.

        Await it from asyncio with ``asyncio.wrap_future``.
        """
        future: concurrent.futures.Future[RecordingInfo] = concurrent.futures.Future()
        if self._closed:
            future.set_exception(RecorderError("recording writer is closed"))
            return future
        self._queue.put(("finish", handle, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Finish pending writes and stop the thread (call off the event loop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        files: dict[int, _OpenRecording] = {}
        while True:
            command = self._queue.get()
            if command is None:
                break
            kind, handle, arg = command
            if kind == "open" and isinstance(arg, Path):
                files[handle] = _OpenRecording.create(arg)
            elif kind == "write" and isinstance(arg, bytes):
                with self._lock:
                    self._pending_bytes -= len(arg)
                entry = files.get(handle)
                if entry is not None:
                    entry.append(arg)
            elif kind == "finish" and isinstance(arg, concurrent.futures.Future):
                self._finish_one(files.pop(handle, None), handle, arg)
        for entry in files.values():
            entry.close()

    def _finish_one(
        self,
        entry: _OpenRecording | None,
        handle: int,
        future: concurrent.futures.Future[RecordingInfo],
    ) -> None:
        with self._lock:
            dropped = self._dropped.pop(handle, 0)
        if entry is None:
            future.set_exception(RecorderError(f"unknown recording handle {handle}"))
            return
        entry.close()
        if entry.error is not None:
            future.set_exception(RecorderError(f"recording {entry.path} failed: {entry.error}"))
        else:
            future.set_result(RecordingInfo(entry.path, entry.written, dropped))


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


def _wav_header(data_bytes: int) -> bytes:
    """44-byte RIFF header of a stereo 16-bit PCM WAV at ``SAMPLE_RATE``."""
    return _WAV_HEADER.pack(
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 2, SAMPLE_RATE,
        SAMPLE_RATE * 4, 4, 16, b"data", data_bytes,
    )  # fmt: skip


class _OpenRecording:
    """A WAV file being written by the writer thread (touched by no other thread).

    Raw ``os.write``/``os.pwrite`` rather than the ``wave`` module: the thread
    shares the GIL with the media event loop, and every line of Python it runs
    between system calls (which release the GIL) can hold up a 20 ms media
    tick. The header is rewritten after each chunk, so the file is a valid
    WAV even if the process dies mid-call.
    """

    __slots__ = ("error", "fd", "path", "written")

    def __init__(self, path: Path, fd: int | None, error: str | None) -> None:
        self.path = path
        self.fd = fd
        self.written = 0
        self.error = error

    @classmethod
    def create(cls, path: Path) -> _OpenRecording:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except OSError as exc:
            return cls(path, None, str(exc))
        entry = cls(path, fd, None)
        entry._write_header()
        return entry

    def _write_header(self) -> None:
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, _wav_header(self.written), 0)
        except OSError as exc:
            self.error = str(exc)

    def append(self, stereo_pcm: bytes) -> None:
        if self.fd is None or self.error is not None:
            return
        try:
            view = memoryview(stereo_pcm)
            while view:
                done = os.pwrite(self.fd, view, 44 + self.written)
                self.written += done
                view = view[done:]
        except OSError as exc:
            self.error = str(exc)
            return
        self._write_header()

    def close(self) -> None:
        if self.fd is None:
            return
        try:
            os.close(self.fd)
        except OSError as exc:
            self.error = self.error or str(exc)
        self.fd = None


class CallRecorder:
    """Records one call: feed caller/agent frames with ``now``; ``tick`` writes.

    ``tick`` hands audio to the writer at most every ``flush_every`` seconds,
    counted from the call's own start: the server ticks every recorder in one
    pass, and calls start at different moments, so each pass flushes only a
    share of them (a shorter stall of the event loop, fewer and larger writes
    for the writer thread).
    """

    __slots__ = ("_aligner", "_closed", "_flush_every", "_handle", "_next_flush", "_writer", "path")

    def __init__(
        self, writer: RecordingWriter, path: Path, start: float, *, flush_every: float = 1.0
    ) -> None:
        self._writer = writer
        self.path = path
        self._aligner = StereoAligner(start)
        self._handle = writer.open(path)
        self._closed = False
        self._flush_every = flush_every
        self._next_flush = start + flush_every

    def caller(self, pcm: npt.NDArray[np.int16], now: float) -> None:
        if not self._closed:
            self._aligner.add(0, pcm, now)

    def agent(self, pcm: npt.NDArray[np.int16], now: float) -> None:
        if not self._closed:
            self._aligner.add(1, pcm, now)

    def caller_ulaw(self, ulaw: bytes, now: float) -> None:
        """``caller`` for a µ-law frame: kept as bytes, decoded in bulk by ``tick``."""
        if not self._closed:
            self._aligner.add_ulaw(0, ulaw, now)

    def agent_ulaw(self, ulaw: bytes, now: float) -> None:
        """``agent`` for a µ-law frame: kept as bytes, decoded in bulk by ``tick``."""
        if not self._closed:
            self._aligner.add_ulaw(1, ulaw, now)

    def tick(self, now: float) -> None:
        """Hand committed audio to the writer (call every ~0.5 s; flushes every
        ``flush_every``)."""
        if not self._closed and now >= self._next_flush:
            self._next_flush = now + self._flush_every
            self._writer.write(self._handle, self._aligner.take(now))

    def finish(self, now: float) -> concurrent.futures.Future[RecordingInfo]:
        """Write the rest and close the file."""
        if self._closed:
            raise RecorderError("recording already finished")
        self._closed = True
        self._writer.write(self._handle, self._aligner.take(now, final=True))
        return self._writer.finish(self._handle)
