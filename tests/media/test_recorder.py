from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from voxgate.media import g711
from voxgate.media.recorder import (
    CallRecorder,
    RecorderError,
    RecordingWriter,
    StereoAligner,
    recording_path,
)


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        data = wav.readframes(wav.getnframes())
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def _frame(value: int) -> np.ndarray:
    return np.full(160, value, dtype=np.int16)


def test_recording_path_layout_and_safety(tmp_path: Path) -> None:
    assert recording_path(tmp_path, "t1", "CA123") == (
        tmp_path / "blobs" / "t1" / "recordings" / "CA123.wav"
    )
    for tenant, call in (("../x", "c"), ("t", "a/b"), ("..", "c"), ("t", "")):
        with pytest.raises(RecorderError):
            recording_path(tmp_path, tenant, call)


def test_aligner_places_agent_audio_at_send_time() -> None:
    aligner = StereoAligner(0.0, max_lag=0.2)
    # Caller talks for 1 s; the agent answers with 200 ms sent 0.5 s in.
    for k in range(50):
        now = (k + 1) * 0.020
        aligner.add(0, _frame(100), now)
        if 25 <= k < 35:
            aligner.add(1, _frame(-200), now)
    out = np.frombuffer(aligner.take(1.0, final=True), dtype=np.int16).reshape(-1, 2)
    assert out.shape == (8000, 2)
    assert (out[:, 0] == 100).all()
    agent = out[:, 1]
    assert (agent[: 25 * 160] == 0).all()
    assert (agent[25 * 160 : 35 * 160] == -200).all()
    assert (agent[35 * 160 :] == 0).all()


def test_aligner_memory_bounded_when_one_side_silent() -> None:
    aligner = StereoAligner(0.0, max_lag=0.5)
    emitted = 0
    for k in range(1500):  # 30 s of caller audio, agent silent throughout
        now = (k + 1) * 0.020
        aligner.add(0, _frame(1), now)
        emitted += len(aligner.take(now)) // 4
        pending = sum(len(c) for c in aligner._pending[0])
        assert pending <= 0.5 * 8000 + 160
    assert emitted >= 29 * 8000


async def test_call_recorder_writes_wav_off_loop(tmp_path: Path) -> None:
    writer = RecordingWriter()
    try:
        path = recording_path(tmp_path, "tenant-a", "call-1")
        rec = CallRecorder(writer, path, start=0.0)
        for k in range(100):
            now = (k + 1) * 0.020
            rec.caller(_frame(k), now)
            if k >= 10:
                rec.agent(_frame(-k), now)
            if k % 25 == 0:
                rec.tick(now)
        info = await asyncio.wrap_future(rec.finish(2.0))
    finally:
        writer.close()
    assert info.path == path and info.dropped_chunks == 0
    stereo = _read(path)
    assert stereo.shape == (100 * 160, 2)
    assert info.duration == pytest.approx(2.0)
    for k in (0, 10, 50, 99):
        assert (stereo[k * 160 : (k + 1) * 160, 0] == k).all()
    assert (stereo[: 10 * 160, 1] == 0).all()
    assert (stereo[50 * 160 : 51 * 160, 1] == -50).all()
    with pytest.raises(RecorderError):
        rec.finish(3.0)


async def test_writer_reports_io_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "blobs"
    blocker.write_text("not a directory")
    writer = RecordingWriter()
    try:
        rec = CallRecorder(writer, recording_path(tmp_path, "t", "c"), start=0.0)
        rec.caller(_frame(1), 0.02)
        with pytest.raises(RecorderError):
            await asyncio.wrap_future(rec.finish(0.02))
    finally:
        writer.close()


def test_writer_drops_when_disk_falls_behind(tmp_path: Path) -> None:
    writer = RecordingWriter(max_pending_bytes=1000)
    try:
        handle = writer.open(tmp_path / "x.wav")
        results = [writer.write(handle, b"\x00" * 640) for _ in range(200)]
        info = writer.finish(handle).result(timeout=10)
    finally:
        writer.close()
    assert False in results
    assert info.dropped_chunks == results.count(False)
    assert info.bytes_written == 640 * results.count(True)


def test_ulaw_frames_record_like_their_decoded_pcm() -> None:
    """µ-law frames (decoded in bulk at take) give the same WAV as decoded PCM,
    gaps and a mix of both kinds on one channel included."""
    rng = np.random.default_rng(3)
    frames = [bytes(rng.integers(0, 256, 160, dtype=np.uint8)) for _ in range(60)]
    by_pcm = StereoAligner(0.0, max_lag=0.2)
    by_ulaw = StereoAligner(0.0, max_lag=0.2)
    out_pcm, out_ulaw = b"", b""
    for k, frame in enumerate(frames):
        if 20 <= k < 30:
            continue  # the caller stalls for 200 ms: padded to the clock
        now = (k + 1) * 0.020
        by_pcm.add(0, g711.ulaw_decode(frame), now)
        by_ulaw.add_ulaw(0, frame, now)
        if k % 3 == 0:
            agent = g711.ulaw_decode(frame[::-1])
            by_pcm.add(1, agent, now)
            # Mixed on one channel: PCM now and then, µ-law otherwise.
            if k % 2:
                by_ulaw.add(1, agent, now)
            else:
                by_ulaw.add_ulaw(1, frame[::-1], now)
        if k % 7 == 0:
            out_pcm += by_pcm.take(now)
            out_ulaw += by_ulaw.take(now)
    out_pcm += by_pcm.take(2.0, final=True)
    out_ulaw += by_ulaw.take(2.0, final=True)
    assert len(out_pcm) >= 55 * 160 * 4
    assert out_ulaw == out_pcm


async def test_call_recorder_flushes_every_flush_every_seconds(tmp_path: Path) -> None:
    class CountingWriter(RecordingWriter):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[int] = []

        def write(self, handle: int, stereo_pcm: bytes) -> bool:
            self.writes.append(len(stereo_pcm))
            return super().write(handle, stereo_pcm)

    writer = CountingWriter()
    try:
        rec = CallRecorder(writer, recording_path(tmp_path, "t", "c"), start=10.0)
        for k in range(150):  # 3 s of caller audio, ticked every 0.5 s like the server
            now = 10.0 + (k + 1) * 0.020
            rec.caller(_frame(k), now)
            if (k + 1) % 25 == 0:
                rec.tick(now)
        assert len(writer.writes) == 3  # at 1 s, 2 s and 3 s, not on every tick
        info = await asyncio.wrap_future(rec.finish(13.0))
    finally:
        writer.close()
    assert info.duration == pytest.approx(3.0)
