"""Turn latency of one call's speech pipeline, in process, with the real models.

    python -m loadtest.bench_pipeline_latency [--mode cached|live|both] [--json out.json]

Every speech fixture (12 phrases, 3 noisy phrases, the 4 turns of the conversation)
is played into a real :class:`CallPipeline` at real time: one 20 ms µ-law frame per
20 ms of a monotonic clock, then silence, exactly as a media socket would deliver
them. Latency per turn is from the end of the caller's speech (the fixture's
measured ``speech_end_s``, mapped onto the feeding clock) to the first ``AudioOut``
of the agent's reply leaving the pipeline. The IPC hop to the media core and its
outbound pacing are not included (both are well under a frame).

Two modes: ``cached`` (a static-prompt flow whose replies were pre-rendered into the
prompt cache, as at publish time) and ``live`` (no cache: every reply synthesized
with Piper). Stage breakdown comes from the pipeline's own turn records. Each turn is
bounded (``--turn-timeout``); a turn that gets no reply counts as a failure.

Stages: ``vad_end_offset`` (VAD's end of speech minus the fixture's), ``endpointing``
(silence waited after VAD's end), ``decision_lag`` (wall time the endpoint decision
ran behind the audio clock), ``stt`` (decode compute), ``stt_wait`` (decode time
left after the endpoint; speculation hides the rest), ``nlp``, ``tts_first_chunk``
and the pipeline's own ``end_to_end`` (from VAD's end).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.audio import read_mulaw_wav
from voxgate.agents import ipc
from voxgate.agents.flowspec import parse_flow, static_prompts
from voxgate.agents.models import SpeechModelConfig, enforce_offline
from voxgate.agents.pipeline import SPECULATIVE_MS, CallPipeline, PipelineResources
from voxgate.agents.prompt_cache import PromptCache
from voxgate.agents.stt import SttConfig
from voxgate.agents.worker import load_resources

AUDIO = Path(__file__).resolve().parents[1] / "tests" / "data" / "audio"
FRAME_S = 0.02
FRAME = 160
SILENCE = b"\xff" * FRAME
TAIL_S = 2.0
"""Silence played after each utterance (the caller waits for the answer)."""

_REPLIES: list[tuple[str, list[str], str]] = [
    (
        "booking",
        ["I'd like to book an appointment.", "Can I make a booking?"],
        "Happy to book that. What day works for you?",
    ),
    (
        "hours",
        ["What are your opening hours?", "When are you open on Saturday?"],
        "We open at eight and close at six, Monday to Saturday.",
    ),
    (
        "order",
        ["My order number is four five six.", "Where is my package?", "Change my address."],
        "Thanks. Let me look that order up for you.",
    ),
    (
        "person",
        ["I want to speak to a person.", "Call me back please.", "Cancel my subscription."],
        "Sure, I will connect you with someone from the team.",
    ),
    (
        "account",
        ["I want to check my account balance.", "What is my balance?"],
        "Your balance is available in the app, under accounts.",
    ),
    ("yes", ["Yes, that works.", "Yes please.", "Sounds good."], "Great, you are all set."),
    ("goodbye", ["Goodbye.", "Bye, thanks."], "Thanks for calling, goodbye!"),
]


def bench_flow() -> dict[str, Any]:
    """An intent flow whose every reply is a static prompt."""
    nodes: list[dict[str, Any]] = [
        {"id": "start", "type": "start"},
        {"id": "hello", "type": "say", "text": "Hi, how can I help?"},
        {"id": "ask", "type": "intent"},
        {"id": "sorry", "type": "say", "text": "Sorry, could you say that again?"},
    ]
    edges: list[dict[str, Any]] = [
        {"id": "e1", "source": "start", "port": "next", "target": "hello"},
        {"id": "e2", "source": "hello", "port": "next", "target": "ask"},
        {"id": "e3", "source": "ask", "port": "fallback", "target": "sorry"},
        {"id": "e4", "source": "sorry", "port": "next", "target": "ask"},
    ]
    for name, _, reply in _REPLIES:
        nodes.append({"id": f"r_{name}", "type": "say", "text": reply})
        edges.append({"id": f"i_{name}", "source": "ask", "port": name, "target": f"r_{name}"})
        edges.append({"id": f"b_{name}", "source": f"r_{name}", "port": "next", "target": "ask"})
    return {
        "schema": "flowspec/1",
        "id": "bench",
        "locale": "en-US",
        "slots": [],
        "entities": [],
        "globals": [],
        "layout": {},
        "intents": [{"name": n, "examples": ex} for n, ex, _ in _REPLIES],
        "nodes": nodes,
        "edges": edges,
    }


@dataclass
class TurnResult:
    fixture: str
    expected: str
    transcript: str = ""
    reply: str = ""
    latency_s: float | None = None
    """End of caller speech -> first AudioOut of the reply (None: no reply in time)."""
    finals: int = 0
    """Caller finals seen for this utterance (more than 1: a false endpoint)."""
    stages: dict[str, float] = field(default_factory=dict)
    speculative: bool = False


class _Call:
    """Collects the pipeline's frames; acknowledges marks as if played instantly."""

    def __init__(self) -> None:
        self.pipeline: CallPipeline | None = None
        self.finals: list[ipc.Transcript] = []
        self.ended: list[tuple[float, float]] = []
        """(speech end in audio time, wall time) of each SpeechEnded."""
        self.first_audio: list[float | None] = []
        """Per caller final: wall time of the first AudioOut before the next final."""
        self.changed = asyncio.Event()
        self.greeted = asyncio.Event()

    async def send(self, frame: ipc.Frame) -> None:
        now = time.monotonic()
        if isinstance(frame, ipc.SpeechEnded):
            self.ended.append((frame.at, now))
        elif isinstance(frame, ipc.Transcript) and frame.final and frame.role == "caller":
            self.finals.append(frame)
            self.first_audio.append(None)
        elif isinstance(frame, ipc.AudioOut):
            if self.first_audio and self.first_audio[-1] is None:
                self.first_audio[-1] = now
                self.changed.set()
            if frame.mark and self.pipeline is not None:
                self.pipeline.on_mark(frame.mark)
                self.greeted.set()


async def _play(pipeline: CallPipeline, ulaw: bytes, t0: float) -> None:
    """Feed ``ulaw`` in 20 ms frames paced on the monotonic clock from ``t0``."""
    for seq, i in enumerate(range(0, len(ulaw), FRAME)):
        delay = t0 + seq * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pipeline.feed_audio(ipc.AudioIn(call_id="bench", seq=seq, ulaw=ulaw[i : i + FRAME]))


async def _run_call(
    res: PipelineResources,
    flow: dict[str, Any],
    settings: ipc.CallSettings,
    item: tuple[str, str, bytes, list[float]],
    turn_timeout: float,
    speculative_ms: int,
) -> list[TurnResult]:
    """One call: the greeting plays, then the fixture is played at real time."""
    name, text, ulaw, ends = item
    call = _Call()
    start = ipc.StartCall(
        call_id="bench", tenant_id="bench", agent_id="bench", flow=flow, settings=settings
    )
    pipeline = CallPipeline(
        start, res, call.send, flow=parse_flow(flow)[0], speculative_ms=speculative_ms
    )
    call.pipeline = pipeline
    task = asyncio.get_running_loop().create_task(pipeline.run())
    try:
        await asyncio.wait_for(call.greeted.wait(), turn_timeout)
        t0 = time.monotonic()
        await _play(pipeline, ulaw + SILENCE * int(TAIL_S / FRAME_S), t0)
        await pipeline.audio_processed()
        # Bounded wait for the last reply.
        deadline = t0 + ends[-1] + turn_timeout
        while time.monotonic() < deadline and (
            len(call.finals) < len(ends) or call.first_audio[-1] is None
        ):
            call.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.changed.wait(), max(0.01, deadline - time.monotonic()))
            if pipeline.turn_records and not pipeline.turn_records[-1].agent_text:
                break  # the flow chose not to answer: waiting longer changes nothing
    finally:
        pipeline.end("bench done")
        await asyncio.wait_for(task, 30)
    records = pipeline.turn_records
    results: list[TurnResult] = []
    used: set[int] = set()
    for n, end_s in enumerate(ends):
        result = TurnResult(fixture=f"{name}#{n}" if len(ends) > 1 else name, expected=text)
        # The caller final whose speech ends at this turn's end (others are false endpoints).
        match = next(
            (i for i, f in enumerate(call.finals) if i not in used and abs(f.end - end_s) < 0.5),
            None,
        )
        if match is not None:
            used.add(match)
            final = call.finals[match]
            result.transcript = final.text
            result.finals = 1
            heard = call.first_audio[match]
            if heard is not None:
                result.latency_s = heard - (t0 + end_s)
            if match < len(records):
                record = records[match]
                result.stages = dict(record.latencies)
                result.reply = record.agent_text
                result.speculative = record.latencies["stt_wait"] < record.latencies["stt"]
                # VAD's view of the end vs the fixture's, and how far the endpoint
                # decision ran behind the audio clock (processing backlog).
                result.stages["vad_end_offset"] = final.end - end_s
                decided = t0 + final.end + record.latencies["endpointing"]
                walls = [w for at, w in call.ended if abs(at - final.end) < 1e-6]
                if walls:
                    result.stages["decision_lag"] = walls[0] - decided
        results.append(result)
    if results:
        results[-1].finals += len(call.finals) - len(used)
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fixtures(names: set[str] | None) -> list[tuple[str, str, bytes, list[float]]]:
    manifest = json.loads((AUDIO / "manifest.json").read_text())
    out = []
    for entry in manifest:
        if entry["kind"] not in ("phrase", "noisy", "conversation"):
            continue
        if names is not None and entry["name"] not in names:
            continue
        ulaw = read_mulaw_wav(AUDIO / entry["file"])
        if entry["kind"] == "conversation":
            ends = [t["end_s"] for t in entry["turns"]]
        else:
            ends = [entry["speech_end_s"]]
        out.append((entry["name"], entry["text"], ulaw, ends))
    return out


async def run_mode(
    res: PipelineResources,
    mode: str,
    items: list[tuple[str, str, bytes, list[float]]],
    *,
    min_silence_ms: int,
    turn_timeout: float,
    speculative_ms: int,
) -> dict[str, Any]:
    flow = bench_flow()
    with tempfile.TemporaryDirectory(prefix="vg-bench-prompts-") as tmp:
        cache_dir = None
        if mode == "cached":
            cache = PromptCache(Path(tmp), res.tts.settings_key)
            texts = static_prompts(parse_flow(flow)[0])
            await asyncio.to_thread(cache.build, texts, res.tts)
            cache_dir = tmp
        settings = ipc.CallSettings(min_silence_ms=min_silence_ms, prompt_cache_dir=cache_dir)
        load_before = os.getloadavg()
        results: list[TurnResult] = []
        for item in items:  # one call per fixture, so turns never queue behind each other
            results += await _run_call(
                res, flow, settings, item, turn_timeout, speculative_ms=speculative_ms
            )
        load_after = os.getloadavg()
    latencies = [r.latency_s for r in results if r.latency_s is not None]
    summary: dict[str, Any] = {
        "mode": mode,
        "turns": len(results),
        "replied": len(latencies),
        "flow_no_reply": sum(bool(r.transcript) and not r.reply for r in results),
        "false_endpoints": sum(max(0, r.finals - 1) for r in results),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "results": [asdict(r) for r in results],
    }
    if latencies:
        summary.update(
            p50_s=statistics.median(latencies),
            p95_s=_pct(latencies, 0.95),
            max_s=max(latencies),
            min_s=min(latencies),
        )
    stage_names = (
        "vad_end_offset",
        "endpointing",
        "decision_lag",
        "stt",
        "stt_wait",
        "nlp",
        "tts_first_chunk",
        "end_to_end",
    )
    stages: dict[str, dict[str, float]] = {}
    for name in stage_names:
        values = [r.stages[name] for r in results if name in r.stages]
        if values:
            stages[name] = {"p50_s": statistics.median(values), "p95_s": _pct(values, 0.95)}
    summary["stages"] = stages
    summary["speculative_hits"] = sum(r.speculative for r in results)
    return summary


def report(out: dict[str, Any]) -> str:
    lines = [
        f"machine: {out['cpus']} CPUs, load average at start {out['load_avg'][0]:.2f} "
        f"{out['load_avg'][1]:.2f} {out['load_avg'][2]:.2f}",
        f"settings: min_silence_ms={out['min_silence_ms']}, speculative_ms="
        f"{out['speculative_ms']}, STT tiny.en int8 beam {out['beam']}, "
        f"{out['stt_threads']} STT thread(s), partials every "
        f"{out.get('partial_interval_s', 0.5)} s, {out.get('encoder', 'trimmed')} encoder",
    ]
    for mode in out["modes"]:
        lines.append(
            f"[{mode['mode']}] {mode['replied']}/{mode['turns']} turns answered, "
            f"flow chose no reply {mode['flow_no_reply']}, "
            f"false endpoints {mode['false_endpoints']}, speculative decode reused "
            f"{mode['speculative_hits']}, load avg {mode['load_avg_before'][0]:.2f} -> "
            f"{mode['load_avg_after'][0]:.2f}"
        )
        if "p50_s" in mode:
            lines.append(
                f"  end of speech -> first AudioOut: p50 {mode['p50_s'] * 1000:.0f} ms, "
                f"p95 {mode['p95_s'] * 1000:.0f} ms, min {mode['min_s'] * 1000:.0f} ms, "
                f"max {mode['max_s'] * 1000:.0f} ms"
            )
        for name, row in mode["stages"].items():
            lines.append(
                f"  stage {name:16s} p50 {row['p50_s'] * 1000:6.0f} ms  "
                f"p95 {row['p95_s'] * 1000:6.0f} ms"
            )
        for r in mode["results"]:
            lat = "no reply" if r["latency_s"] is None else f"{r['latency_s'] * 1000:5.0f} ms"
            lines.append(f"    {r['fixture']:26s} {lat}  {r['transcript']!r} -> {r['reply']!r}")
    return "\n".join(lines)


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    models = SpeechModelConfig(stt_cpu_threads=args.stt_threads, tts_threads=args.tts_threads)
    stt = SttConfig(partial_interval_s=args.partial_interval_s, trim_encoder=not args.full_encoder)
    res = await asyncio.to_thread(load_resources, models, max_calls=1, stt=stt)
    try:
        items = fixtures(set(args.only) if args.only else None)
        modes = ["cached", "live"] if args.mode == "both" else [args.mode]
        out: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "min_silence_ms": args.min_silence_ms,
            "speculative_ms": args.speculative_ms,
            "beam": ipc.CallSettings().stt_beam_size,
            "stt_threads": args.stt_threads,
            "partial_interval_s": args.partial_interval_s,
            "encoder": "full 30 s" if args.full_encoder else "trimmed",
            "modes": [],
        }
        for mode in modes:
            out["modes"].append(
                await run_mode(
                    res,
                    mode,
                    items,
                    min_silence_ms=args.min_silence_ms,
                    turn_timeout=args.turn_timeout,
                    speculative_ms=args.speculative_ms,
                )
            )
        return out
    finally:
        res.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_pipeline_latency")
    parser.add_argument("--mode", choices=["cached", "live", "both"], default="both")
    parser.add_argument("--min-silence-ms", type=int, default=ipc.CallSettings().min_silence_ms)
    parser.add_argument("--speculative-ms", type=int, default=SPECULATIVE_MS)
    parser.add_argument("--stt-threads", type=int, default=1)
    parser.add_argument("--tts-threads", type=int, default=1)
    parser.add_argument("--turn-timeout", type=float, default=5.0)
    parser.add_argument(
        "--full-encoder", action="store_true", help="Whisper's 30 s window (for comparison)"
    )
    parser.add_argument(
        "--partial-interval-s",
        type=float,
        default=SttConfig().partial_interval_s,
        help="partial transcripts while the caller speaks; 0 disables them",
    )
    parser.add_argument("--only", nargs="*", help="fixture names (default: all speech fixtures)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    enforce_offline(os.environ)
    out = asyncio.run(_amain(args))
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
