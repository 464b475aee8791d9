"""Micro-benchmark of the per-frame media hot path (Twilio stream, 20 ms frames).

Measures, per frame: parse an inbound ``media`` JSON message (msgspec,
including base64 decode), µ-law decode to PCM, and build the outbound
``media`` message (base64 encode + JSON text), separately and together.

    python -m loadtest.bench_media [--frames 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections.abc import Callable

import numpy as np

from voxgate.media import g711
from voxgate.media.call import Call
from voxgate.media.channel import FrameClock
from voxgate.media.diagnostics import EchoAgent
from voxgate.media.outqueue import OutboundQueue
from voxgate.media.pacer import Pacer
from voxgate.media.twilio_channel import TwilioMediaChannel
from voxgate.media.twilio_stream import TwilioStreamState

SID = "MZ" + "0" * 32


def _start() -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "callSid": "CA" + "0" * 32,
                "streamSid": SID,
                "tracks": ["inbound"],
                "customParameters": {"token": "x" * 40},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def _media_messages(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        payload = base64.b64encode(rng.integers(0, 256, 160, dtype=np.uint8).tobytes()).decode()
        out.append(
            json.dumps(
                {
                    "event": "media",
                    "sequenceNumber": str(i + 2),
                    "streamSid": SID,
                    "media": {
                        "track": "inbound",
                        "chunk": str(i + 1),
                        "timestamp": str(i * 20),
                        "payload": payload,
                    },
                }
            )
        )
    return out


def _time(label: str, n: int, fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    per = (time.perf_counter() - t0) / n * 1e6
    print(f"{label:<44} {per:7.2f} µs/frame")
    return per


async def _echo_path(messages: list[str]) -> float:
    """Whole echo call on asyncio: feed -> channel -> EchoAgent -> paced send."""
    sent: list[str] = []

    async def send_text(text: str) -> None:
        sent.append(text)

    async def close() -> None:
        return None

    clock = FrameClock()
    state = TwilioStreamState()
    state.feed(_start(), 0.0)
    call = Call(
        "c", tenant_id="t", agent_id="a", provider="twilio", from_number="1", to_number="2", now=0.0
    )
    call.answer(0.0)
    channel = TwilioMediaChannel(call, clock, state, send_text, close)
    task = asyncio.ensure_future(EchoAgent().run(channel))
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    for i, m in enumerate(messages):
        now = i * 0.02
        channel.handle(state.feed(m, now), now)
        await asyncio.sleep(0)  # let the agent run, as the loop would
        await clock.tick()
    elapsed = time.perf_counter() - t0
    task.cancel()
    assert len(sent) >= len(messages) - 11
    return elapsed / len(messages) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50000)
    args = parser.parse_args()
    n: int = args.frames
    messages = _media_messages(n)
    payloads = [bytes([i % 256]) * 160 for i in range(n)]

    state = TwilioStreamState()
    state.feed(_start(), 0.0)

    def parse() -> None:
        s = TwilioStreamState()
        s.feed(_start(), 0.0)
        for i, m in enumerate(messages):
            s.feed(m, i * 0.02)

    def decode() -> None:
        for p in payloads:
            g711.ulaw_decode(p)

    def encode_out() -> None:
        for p in payloads:
            state.media_message(p)

    def pcm_encode() -> None:
        pcm = g711.ulaw_decode(payloads[0])
        for _ in range(n):
            g711.ulaw_encode(pcm)

    def pace_queue() -> None:
        q = OutboundQueue(max_frames=n + 1)
        pacer = Pacer(0.0)
        for p in payloads:
            q.push(p)
        for i in range(n):
            for _ in range(pacer.poll(i * 0.02)):
                q.pop_frame()

    def hot_path() -> None:
        s = TwilioStreamState()
        s.feed(_start(), 0.0)
        for i, m in enumerate(messages):
            for event in s.feed(m, i * 0.02):
                g711.ulaw_decode(event.payload)  # type: ignore[union-attr]
                s.media_message(event.payload)  # type: ignore[union-attr]

    print(f"frames: {n}")
    _time("parse inbound media JSON (+base64 decode)", n, parse)
    _time("µ-law decode 160 B -> PCM16", n, decode)
    _time("PCM16 -> µ-law encode 160 samples", n, pcm_encode)
    _time("build outbound media message", n, encode_out)
    _time("outbound queue push+pop with pacer", n, pace_queue)
    per = _time("hot path: parse + decode + outbound encode", n, hot_path)
    # 50 frames/s per stream in each direction.
    print(f"=> one core's budget covers ~{int(1e6 / (per * 50))} streams on this path alone")
    echo = asyncio.run(_echo_path(messages))
    print(f"{'echo call on asyncio (channel+agent+clock)':<44} {echo:7.2f} µs/frame")
    print(f"=> ~{int(1e6 / (echo * 50))} echo streams per core before socket I/O")


if __name__ == "__main__":
    main()
