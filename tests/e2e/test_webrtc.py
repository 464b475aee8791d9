"""End to end over WebRTC: a browser-like aiortc caller on loopback talks to
demo-receptionist on real models (Whisper, Piper, Silero) through the signalling
route, like the console's Call button."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from loadtest.audio import FixtureLibrary, default_audio_dir
from loadtest.webrtc_caller import BrowserCaller
from tests.e2e.conftest import Line, SpeechEnv, start_speech_env
from voxgate.server.call_control import CALLS
from voxgate.server.routes_webrtc import WEBRTC

GREETING_WORDS = ("opening hours", "appointment")
AUDIO = FixtureLibrary(default_audio_dir())


def _words(text: str) -> str:
    return " ".join("".join(c.lower() if c.isalnum() else " " for c in text).split())


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SpeechEnv]:
    async for value in start_speech_env(tmp_path):
        yield value


def browser(env: SpeechEnv, session: aiohttp.ClientSession, line: Line) -> BrowserCaller:
    key = line.headers["Authorization"].removeprefix("Bearer ")
    return BrowserCaller(session, env.url, line.tenant_id, line.agent_id, key)


async def _detail(env: SpeechEnv, line: Line, call_id: str) -> Any:
    """The call's record once its ending is done (its lifecycle returned)."""
    calls = [t for t in env.client.app[WEBRTC].calls if t.get_name() == f"webrtc-{call_id}"]
    if calls:
        await asyncio.wait(calls, timeout=15)
    assert env.client.app[CALLS].control.get(call_id) is None
    base = f"/tenants/{line.tenant_id}/api"
    response = await env.client.get(f"{base}/calls/{call_id}", headers=line.headers)
    assert response.status == 200
    return await response.json()


async def test_greeting_hours_answer_and_hang_up_by_delete(
    env: SpeechEnv, transcribe: Callable[[bytes], str]
) -> None:
    line = env.lines[0]
    async with aiohttp.ClientSession() as session:
        caller = browser(env, session, line)
        try:
            call_id = await caller.call()
            await caller.wait_connected(10)
            # The agent greets first, without waiting for the caller.
            assert await caller.wait_quiet(1.0, within=25), "no greeting"
            greeting = bytes(caller.ear.audio)
            heard = _words(await asyncio.to_thread(transcribe, greeting))
            for words in GREETING_WORDS:
                assert words in heard, heard
            # The caller asks; the receptionist answers with Saturday's hours.
            question = AUDIO.load("opening_hours_saturday").payload
            asked = await asyncio.wait_for(caller.mic.play(question), 10)
            replied = await caller.wait_sound(asked, within=10)
            assert replied is not None, "no answer"
            assert await caller.wait_quiet(1.2, within=25)
            answer = bytes(caller.ear.audio[len(greeting) :])
            text = _words(await asyncio.to_thread(transcribe, answer))
            assert "saturday" in text, text
            assert "ten to two" in text or "10 to 2" in text, text
            # Hang-up by DELETE: 204, the peer connection closes, the record ends.
            assert await caller.hangup() == 204
            await caller.wait_closed(10)
        finally:
            await caller.close()
    detail = await _detail(env, line, call_id)
    record = detail["call"]
    assert record["provider"] == "webrtc" and record["end_reason"] == "caller_hangup"
    assert record["status"] == "completed" and record["ended_at"] is not None
    turns = detail["turns"]
    said = " ".join(t["text"].lower() for t in turns if t["role"] == "caller")
    assert "saturday" in said, turns
    assert any(t["role"] == "agent" and "ten to two" in t["text"].lower() for t in turns), turns
    assert record["recording"] is True


async def test_barge_in_stops_the_agents_audio(env: SpeechEnv) -> None:
    line = env.lines[0]
    speech = AUDIO.load("book_appointment")
    async with aiohttp.ClientSession() as session:
        caller = browser(env, session, line)
        try:
            call_id = await caller.call()
            await caller.wait_connected(10)
            greeting_at = await caller.wait_sound(0.0, within=25)
            assert greeting_at is not None, "no greeting"
            # Talk over the greeting (about seven seconds long) one second in.
            await asyncio.sleep(max(0.0, greeting_at + 1.0 - time.monotonic()))
            started = time.monotonic()
            ended = await asyncio.wait_for(caller.mic.play(speech.payload), 10)
            onset = started + speech.utterances[0].start_s
            # The agent's audio stops within the barge-in budget, and stays stopped
            # while the caller talks (the greeting alone would go on for seconds).
            talking = [
                at
                for at, loud in zip(caller.ear.arrivals, caller.ear.loud, strict=True)
                if loud and onset <= at <= ended
            ]
            assert talking, "the greeting was not playing when the caller spoke"
            stopped_ms = (talking[-1] - onset) * 1000
            assert stopped_ms <= 700, stopped_ms
        finally:
            await caller.close()
    detail = await _detail(env, line, call_id)
    kinds = [e["kind"] for e in detail["events"]]
    assert "barge_in" in kinds, kinds
    print(f"agent audio stopped {stopped_ms:.0f} ms after the caller's speech onset")
