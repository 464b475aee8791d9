from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path

import numpy as np

from voxgate.media import g711
from voxgate.media.call import Call, CallState, EndReason
from voxgate.media.channel import FrameClock
from voxgate.media.diagnostics import EchoAgent, PromptAgent, tone_sequence
from voxgate.media.recorder import CallRecorder, RecordingWriter, recording_path
from voxgate.media.twilio_channel import TwilioMediaChannel
from voxgate.media.twilio_stream import TwilioStreamState
from voxgate.media.wavfile import read_wav

AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
SID = "MZ42"


class FakeTwilio:
    """The far end of the WebSocket: collects what the server sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed = False

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def close(self) -> None:
        self.closed = True

    def media(self) -> list[bytes]:
        return [
            base64.b64decode(m["media"]["payload"])  # type: ignore[index]
            for m in self.sent
            if m["event"] == "media"
        ]

    def events(self, kind: str) -> list[dict[str, object]]:
        return [m for m in self.sent if m["event"] == kind]


def start_msg() -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "callSid": "CA1",
                "accountSid": "AC1",
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media_msg(seq: int, payload: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": str(seq),
                "timestamp": str((seq - 2) * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def make_channel(
    clock: FrameClock, far: FakeTwilio, recorder: CallRecorder | None = None
) -> TwilioMediaChannel:
    state = TwilioStreamState()
    state.feed(start_msg(), 0.0)
    call = Call(
        "c1",
        tenant_id="t",
        agent_id="echo",
        provider="twilio",
        from_number="+1",
        to_number="+2",
        now=0.0,
    )
    call.answer(0.0)
    return TwilioMediaChannel(call, clock, state, far.send_text, far.close, recorder=recorder)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_echo_returns_fixture_audio_200ms_later_with_marks() -> None:
    audio = g711.ulaw_encode(read_wav(AUDIO / "book_appointment.wav").mono)
    frames = [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)][:120]
    clock, far = FrameClock(), FakeTwilio()
    channel = make_channel(clock, far)
    agent = EchoAgent()
    task = asyncio.ensure_future(agent.run(channel))
    for i, frame in enumerate(frames):
        now = (i + 1) * 0.02
        channel.handle(channel.state.feed(media_msg(i + 2, frame), now), now)
        await settle()
        await clock.tick()
    sent = far.media()
    # 10 frames held back (200 ms); every byte returned unchanged and in order.
    assert len(sent) == len(frames) - 10
    assert sent == frames[: len(sent)]
    marks = [m["mark"]["name"] for m in far.events("mark")]  # type: ignore[index]
    assert marks == ["echo-50", "echo-100"]
    channel.handle(
        channel.state.feed(
            json.dumps(
                {
                    "event": "mark",
                    "streamSid": SID,
                    "sequenceNumber": "999",
                    "mark": {"name": "echo-50"},
                }
            ),
            3.0,
        ),
        3.0,
    )
    await settle()
    assert agent.marks_reached == ["echo-50"]
    channel.handle(
        channel.state.feed(
            json.dumps({"event": "stop", "streamSid": SID, "sequenceNumber": "1000"}), 3.1
        ),
        3.1,
    )
    await asyncio.wait_for(task, 1)
    assert channel.call.state is CallState.ENDED
    assert channel.call.end_reason is EndReason.CALLER_HANGUP


async def test_echo_dtmf_clears_pending_audio() -> None:
    clock, far = FrameClock(), FakeTwilio()
    channel = make_channel(clock, far)
    task = asyncio.ensure_future(EchoAgent(delay_ms=0, mark_every_frames=0).run(channel))
    for i in range(5):
        channel.handle(channel.state.feed(media_msg(i + 2, bytes([i]) * 160), 0.0), 0.0)
    await settle()
    await clock.tick()
    channel.handle(
        channel.state.feed(
            json.dumps(
                {
                    "event": "dtmf",
                    "streamSid": SID,
                    "sequenceNumber": "50",
                    "dtmf": {"track": "inbound_track", "digit": "1"},
                }
            ),
            0.1,
        ),
        0.1,
    )
    await settle()
    await clock.tick()
    assert [m["event"] for m in far.sent] == ["media", "clear"]
    assert len(channel.outbound) == 0
    await channel.hangup(EndReason.AGENT_HANGUP)
    await asyncio.wait_for(task, 1)
    assert far.closed


async def test_prompt_plays_tones_then_hangs_up_after_mark_echo() -> None:
    clock, far = FrameClock(), FakeTwilio()
    channel = make_channel(clock, far)
    agent = PromptAgent()
    task = asyncio.ensure_future(agent.run(channel))
    await settle()
    n_frames = len(agent.audio) // 160
    for _ in range(n_frames + 1):
        await clock.tick()
    assert len(far.media()) == n_frames
    assert far.events("mark") == [
        {"event": "mark", "streamSid": SID, "mark": {"name": "prompt-end"}}
    ]
    assert not task.done()  # waits until Twilio says it was played
    channel.handle(
        [
            *channel.state.feed(
                json.dumps(
                    {
                        "event": "mark",
                        "streamSid": SID,
                        "sequenceNumber": "2",
                        "mark": {"name": "prompt-end"},
                    }
                ),
                2.0,
            )
        ],
        2.0,
    )
    await asyncio.wait_for(task, 1)
    assert agent.completed and far.closed
    assert channel.call.end_reason is EndReason.AGENT_HANGUP


def test_tone_sequence_has_the_tones() -> None:
    audio = tone_sequence(((440.0, 0.4), (660.0, 0.4), (880.0, 0.6)), gap=0.15)
    assert len(audio) % 160 == 0
    pcm = g711.ulaw_decode(audio).astype(np.float64)
    for freq, start, dur in ((440, 0.0, 0.4), (660, 0.55, 0.4), (880, 1.1, 0.6)):
        seg = pcm[int((start + 0.05) * 8000) : int((start + dur - 0.05) * 8000)]
        spectrum = np.abs(np.fft.rfft(seg))
        peak = np.fft.rfftfreq(len(seg), 1 / 8000)[int(np.argmax(spectrum))]
        assert abs(peak - freq) < 15
    gap = pcm[int(0.42 * 8000) : int(0.53 * 8000)]
    assert np.abs(gap).max() == 0


async def test_twilio_channel_records_both_sides(tmp_path: Path) -> None:
    writer = RecordingWriter()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    path = recording_path(tmp_path, "t", "c1")
    recorder = CallRecorder(writer, path, start=t0)
    clock, far = FrameClock(), FakeTwilio()
    channel = make_channel(clock, far, recorder)
    try:
        await channel.send(b"\x80" * 160 * 3)
        for i in range(3):
            now = loop.time()
            channel.handle(channel.state.feed(media_msg(i + 2, b"\x00" * 160), now), now)
            await clock.tick()
        info = await asyncio.wrap_future(recorder.finish(loop.time()))
    finally:
        writer.close()
    with wave.open(str(info.path), "rb") as wav:
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    assert (stereo[:, 0] == g711.ulaw_decode(b"\x00")[0]).sum() == 480
    assert (stereo[:, 1] == g711.ulaw_decode(b"\x80")[0]).sum() == 480


async def test_echo_keeps_going_when_far_end_never_echoes_marks() -> None:
    clock, far = FrameClock(), FakeTwilio()
    channel = make_channel(clock, far)
    agent = EchoAgent(delay_ms=0, mark_every_frames=1)
    task = asyncio.ensure_future(agent.run(channel))
    for i in range(300):
        channel.handle(channel.state.feed(media_msg(i + 2, b"\x01" * 160), i * 0.02), i * 0.02)
        await settle()
        await clock.tick()
    assert len(far.media()) == 300
    assert agent.marks_skipped == 300 - 256
    assert not task.done()
    await channel.hangup()
    await asyncio.wait_for(task, 1)
