"""Speech engine micro-benchmarks: model load, RSS, STT latency, TTS first chunk, VAD cost.

    python -m loadtest.bench_speech [--json out.json] [--threads 1]

Uses the phrase fixtures of ``tests/data/audio``; every model comes from
installed packages (nothing is downloaded). Numbers are for one process on an
otherwise idle machine; run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from loadtest.audio import read_mulaw_wav
from voxgate.agents.endpointing import Endpointer
from voxgate.agents.models import SpeechModelConfig, enforce_offline
from voxgate.agents.stt import SpeechRecognizer, SttConfig
from voxgate.agents.tts import SpeechSynthesizer, split_sentences
from voxgate.agents.vad import SileroVad, VadStream
from voxgate.media.g711 import ulaw_decode
from voxgate.media.resample import StreamResampler

AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "audio"
REPLIES = [
    "Hello, thanks for calling. How can I help you today?",
    "We open at eight and close at six.",
    "Happy to book that. What day works for you?",
    "Sorry, could you say that again?",
]
_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _words(text: str) -> list[str]:
    text = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", text.lower())
    return re.findall(r"[a-z']+", text)


def _wer(ref: str, hyp: str) -> float:
    r, h = _words(ref), _words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


def _pcm16k(ulaw: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    res = StreamResampler(8000, 16000)
    pcm = ulaw_decode(ulaw)
    return np.concatenate([res.process(pcm), res.flush()])


def _rss_mb(proc: psutil.Process) -> float:
    return float(proc.memory_info().rss / 1e6)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(threads: int) -> dict[str, Any]:
    proc = psutil.Process()
    out: dict[str, Any] = {"threads": threads, "rss_mb_start": _rss_mb(proc)}
    models = SpeechModelConfig(stt_cpu_threads=threads, tts_threads=threads)

    t0 = time.perf_counter()
    vad = SileroVad()
    out["vad_load_s"] = time.perf_counter() - t0
    stt = SpeechRecognizer(models)
    out["stt_load_s"], out["stt_warmup_s"] = stt.load_s, stt.warmup_s
    tts = SpeechSynthesizer(models)
    out["tts_load_s"], out["tts_warmup_s"] = tts.load_s, tts.warmup_s
    out["rss_mb_after_load"] = _rss_mb(proc)

    manifest = json.loads((AUDIO / "manifest.json").read_text())
    phrases = [e for e in manifest if e["kind"] == "phrase"]
    # The default trims Whisper's encoder window; the full 30 s window for comparison.
    full = SpeechRecognizer(models, SttConfig(trim_encoder=False))
    stt_rows = []
    for (encoder, recognizer), beam in [
        (pair, beam) for pair in (("trimmed", stt), ("full 30 s", full)) for beam in (1, 5)
    ]:
        latencies, wers = [], []
        for entry in phrases:
            audio = _pcm16k(read_mulaw_wav(AUDIO / entry["file"]))
            result = recognizer.transcribe(audio, beam_size=beam)
            latencies.append(result.compute_s)
            wers.append(_wer(entry["text"], result.text))
        stt_rows.append(
            {
                "encoder": encoder,
                "beam": beam,
                "p50_s": statistics.median(latencies),
                "p95_s": _pct(latencies, 0.95),
                "max_s": max(latencies),
                "mean_wer": statistics.fmean(wers),
                "exact": sum(w == 0 for w in wers),
                "phrases": len(wers),
            }
        )
    out["stt"] = stt_rows

    tts_rows = []
    for text in REPLIES:
        stream = tts.stream()
        started = time.perf_counter()
        total_bytes = 0
        pieces = split_sentences(text)
        for i, piece in enumerate(pieces):
            data = stream.piece(piece)
            if i == len(pieces) - 1:
                data += stream.finish()
            total_bytes += len(data)
        total = time.perf_counter() - started
        tts_rows.append(
            {
                "text": text,
                "first_chunk_s": stream.first_chunk_s,
                "total_s": total,
                "audio_s": total_bytes / 8000,
                "real_time_factor": total / max(1e-9, total_bytes / 8000),
            }
        )
    out["tts"] = tts_rows

    # VAD: per 32 ms window alone, and the whole per-20 ms-frame path of a call
    # (µ-law decode, 8->16 kHz, VAD, endpointer).
    ulaw = read_mulaw_wav(AUDIO / "conversation.wav")
    audio16 = _pcm16k(ulaw)
    vad.reset()
    windows = [audio16[i : i + 512] for i in range(0, len(audio16) - 511, 512)]
    t0 = time.perf_counter()
    for w in windows:
        vad.probability(np.ascontiguousarray(w))
    out["vad_window_ms"] = (time.perf_counter() - t0) / len(windows) * 1000
    vad.reset()
    stream16 = VadStream(vad)
    res = StreamResampler(8000, 16000)
    ep = Endpointer()
    frames = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]
    t0 = time.perf_counter()
    for frame in frames:
        for window, prob in stream16.feed(res.process(ulaw_decode(frame))):
            ep.process(window, prob)
    out["frame_path_ms"] = (time.perf_counter() - t0) / len(frames) * 1000
    out["rss_mb_end"] = _rss_mb(proc)
    return out


def report(r: dict[str, Any]) -> str:
    lines = [
        f"threads per engine: {r['threads']}",
        f"load: VAD {r['vad_load_s']:.2f} s, STT {r['stt_load_s']:.2f} s "
        f"(+ warm-up {r['stt_warmup_s']:.2f} s), TTS {r['tts_load_s']:.2f} s "
        f"(+ warm-up {r['tts_warmup_s']:.2f} s)",
        f"RSS: start {r['rss_mb_start']:.0f} MB, after load {r['rss_mb_after_load']:.0f} MB, "
        f"end {r['rss_mb_end']:.0f} MB",
        "STT (tiny.en int8, 12 phrase fixtures, 8 kHz µ-law -> 16 kHz, whole files):",
    ]
    for row in r["stt"]:
        lines.append(
            f"  {row['encoder']} encoder, beam {row['beam']}: "
            f"p50 {row['p50_s'] * 1000:.0f} ms, p95 "
            f"{row['p95_s'] * 1000:.0f} ms, max {row['max_s'] * 1000:.0f} ms, "
            f"exact {row['exact']}/{row['phrases']}, mean WER {row['mean_wer']:.3f}"
        )
    lines.append("TTS (Piper joe-medium -> 8 kHz µ-law):")
    for row in r["tts"]:
        lines.append(
            f"  first chunk {row['first_chunk_s'] * 1000:.0f} ms, total "
            f"{row['total_s'] * 1000:.0f} ms for {row['audio_s']:.1f} s audio "
            f"(RTF {row['real_time_factor']:.2f}): {row['text']!r}"
        )
    lines.append(
        f"VAD: {r['vad_window_ms']:.3f} ms per 32 ms window; caller frame path "
        f"(decode+resample+VAD+endpointer) {r['frame_path_ms']:.3f} ms per 20 ms frame"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_speech")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    enforce_offline(os.environ)
    result = run(args.threads)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
