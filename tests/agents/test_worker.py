from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.audio import read_mulaw_wav
from tests.agents.test_stt import wer
from voxgate.agents import ipc

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
ROOT = Path(__file__).resolve().parents[2]

FLOW: dict[str, Any] = {
    "schema": "flowspec/1",
    "id": "tiny",
    "locale": "en-US",
    "slots": [],
    "entities": [],
    "globals": [],
    "layout": {},
    "intents": [
        {"name": "hours", "examples": ["When are you open?", "What are your opening hours?"]},
        {"name": "booking", "examples": ["I want to book an appointment.", "Can I book?"]},
    ],
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "hello", "type": "say", "text": "Hello, thanks for calling."},
        {"id": "ask", "type": "intent"},
        {"id": "hours", "type": "say", "text": "We open at eight and close at six."},
        {"id": "book", "type": "say", "text": "Happy to book that."},
        {"id": "sorry", "type": "say", "text": "Sorry, could you say that again?"},
    ],
    "edges": [
        {"id": "e1", "source": "start", "port": "next", "target": "hello"},
        {"id": "e2", "source": "hello", "port": "next", "target": "ask"},
        {"id": "e3", "source": "ask", "port": "hours", "target": "hours"},
        {"id": "e4", "source": "ask", "port": "booking", "target": "book"},
        {"id": "e5", "source": "ask", "port": "fallback", "target": "sorry"},
        {"id": "e6", "source": "hours", "port": "next", "target": "ask"},
        {"id": "e7", "source": "book", "port": "next", "target": "ask"},
        {"id": "e8", "source": "sorry", "port": "next", "target": "ask"},
    ],
}


def caller_final(frame: ipc.Frame) -> bool:
    return isinstance(frame, ipc.Transcript) and frame.final and frame.role == "caller"


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, channel: ipc.Channel) -> None:
        self.proc = proc
        self.channel = channel

    async def recv_until(self, pred: Any, limit: int = 5000) -> tuple[Any, list[ipc.Frame]]:
        seen: list[ipc.Frame] = []
        for _ in range(limit):
            frame = await asyncio.wait_for(self.channel.recv(), 60)
            seen.append(frame)
            if isinstance(frame, ipc.AudioOut) and frame.mark:
                # Play instantly: acknowledge the mark like the media core would.
                await self.channel.send(ipc.Mark(call_id=frame.call_id, name=frame.mark))
            if pred(frame):
                return frame, seen
        raise AssertionError("frame never arrived")


@pytest.fixture
async def worker(tmp_path: Path) -> Any:
    ours, theirs = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxgate.agents.worker",
        "--fd",
        str(theirs.fileno()),
        "--max-calls",
        "2",
        pass_fds=(theirs.fileno(),),
        env=env,
        cwd=str(tmp_path),
    )
    theirs.close()
    channel = await ipc.Channel.open(ours)
    yield WorkerProcess(proc, channel)
    await channel.close()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def test_worker_call_end_to_end(worker: WorkerProcess, tmp_path: Path) -> None:
    ch = worker.channel
    hello = await asyncio.wait_for(ch.recv(), 120)  # models load before Hello
    assert isinstance(hello, ipc.Hello)
    assert hello.version == ipc.PROTOCOL_VERSION and hello.pid == worker.proc.pid
    await ch.send(ipc.HelloAck(version=ipc.PROTOCOL_VERSION))

    await ch.send(ipc.Ping(seq=1, sent_at=1.0))
    pong, _ = await worker.recv_until(lambda f: isinstance(f, ipc.Pong))
    assert pong.seq == 1 and pong.rss_bytes > 0 and pong.calls == 0

    settings = ipc.CallSettings(prompt_cache_dir=str(tmp_path / "prompts"))
    await ch.send(
        ipc.StartCall(call_id="c1", tenant_id="t1", agent_id="a1", flow=FLOW, settings=settings)
    )
    # The greeting comes first, without any caller audio.
    say, _ = await worker.recv_until(lambda f: isinstance(f, ipc.AgentSay))
    assert say.text == "Hello, thanks for calling."
    _, seen = await worker.recv_until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)
    greeting = b"".join(f.ulaw for f in seen if isinstance(f, ipc.AudioOut))
    assert len(greeting) % 160 == 0 and len(greeting) > 8000

    # Another tenant is refused: the worker is bound to t1 now.
    await ch.send(ipc.StartCall(call_id="c2", tenant_id="t2", agent_id="a", flow=FLOW))
    err, _ = await worker.recv_until(lambda f: isinstance(f, ipc.Error))
    assert err.code == "tenant_mismatch" and err.call_id == "c2"

    # The caller asks, faster than real time, in 20 ms frames.
    phrase = read_mulaw_wav(AUDIO / "opening_hours_saturday.wav") + b"\xff" * 8000
    for seq, i in enumerate(range(0, len(phrase), 160)):
        await ch.send(ipc.AudioIn(call_id="c1", seq=seq, ulaw=phrase[i : i + 160]))
    final, seen = await worker.recv_until(caller_final)
    assert final.role == "caller"
    assert wer("What are your opening hours on Saturday?", final.text) == 0.0, final.text
    assert any(isinstance(f, ipc.SpeechStarted) for f in seen)
    reply, _ = await worker.recv_until(lambda f: isinstance(f, ipc.AgentSay))
    assert reply.text == "We open at eight and close at six."
    await worker.recv_until(lambda f: isinstance(f, ipc.AudioOut) and f.mark)

    await ch.send(ipc.EndCall(call_id="c1", reason="caller_hangup"))
    _, seen = await worker.recv_until(lambda f: isinstance(f, ipc.CallEnded))
    turns = [f for f in seen if isinstance(f, ipc.Turn)]
    assert turns and turns[0].caller_text == final.text and turns[0].intent == "hours"
    assert {"endpointing", "stt", "nlp", "tts_first_chunk", "end_to_end"} <= set(turns[0].latencies)
    # The static greeting was rendered live once and is now in the prompt cache.
    assert list((tmp_path / "prompts").glob("*.ulaw"))

    await ch.send(ipc.EndWorker(reason="test"))
    assert await asyncio.wait_for(worker.proc.wait(), 30) == 0


async def test_worker_refuses_wrong_version(worker: WorkerProcess) -> None:
    hello = await asyncio.wait_for(worker.channel.recv(), 120)
    assert isinstance(hello, ipc.Hello)
    await worker.channel.send(ipc.HelloAck(version=ipc.PROTOCOL_VERSION + 99))
    assert await asyncio.wait_for(worker.proc.wait(), 30) != 0
