"""The Twilio load caller against a scripted fake voice server (see conftest)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from loadtest.audio import (
    FRAME_BYTES,
    MULAW_SILENCE,
    CallerAudio,
    FixtureLibrary,
    SpeechDetector,
    Utterance,
    read_mulaw_wav,
)
from loadtest.twilio.__main__ import main as cli_main
from loadtest.twilio_caller import (
    CallerConfig,
    Outcome,
    TwimlError,
    _connect_url,
    parse_twiml,
    render_summary,
    run_call,
    run_calls,
)
from tests.loadtest.conftest import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, TOKEN, FakeVoiceServer
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.twilio_stream import StreamStarted, StreamStopped, TwilioStreamState

AUDIO_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"
LIB = FixtureLibrary(AUDIO_DIR)
SILENCE = bytes([MULAW_SILENCE])


def short_audio() -> CallerAudio:
    """'Goodbye.' with 20 ms of silence before and 800 ms after (~1.3 s)."""
    goodbye = LIB.load("goodbye")  # speech 0.32-0.73 s
    speech = goodbye.payload[2400:6080]  # 0.30-0.76 s, whole frames
    return CallerAudio(
        name="goodbye-short",
        payload=speech + SILENCE * 6400,
        utterances=(Utterance(0.02, 0.43, "Goodbye."),),
    )


def config(server: FakeVoiceServer, **kw: object) -> CallerConfig:
    base: dict[str, object] = {
        "url": server.base_url,
        "public_url": PUBLIC_URL,
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "to": "+15550100000",
        "audio_dir": str(AUDIO_DIR),
        "http_timeout_s": 5.0,
        "max_call_s": 10.0,
    }
    base.update(kw)
    return msgspec.convert(base, CallerConfig)


# -- TwiML ---------------------------------------------------------------------


def test_parse_connect_stream_with_parameters_and_fallback() -> None:
    t = parse_twiml(
        '<?xml version="1.0"?><Response><Connect><Stream url="wss://h/twilio/media">'
        '<Parameter name="token" value="abc"/><Parameter name="x" value=""/></Stream>'
        "</Connect><Say>Sorry.</Say><Dial>+15550001111</Dial></Response>"
    )
    assert t.stream_url == "wss://h/twilio/media"
    assert t.parameters == {"token": "abc", "x": ""}
    assert t.bidirectional
    assert t.verbs == ("Connect", "Say", "Dial")
    assert t.fallback_verbs == ("Say", "Dial")
    assert t.say == ("Sorry.",) and t.dial == "+15550001111"


def test_parse_busy_and_listen_only() -> None:
    busy = parse_twiml("<Response><Say>Busy</Say><Hangup/></Response>")
    assert busy.stream_url is None and busy.verbs == ("Say", "Hangup")
    start = parse_twiml('<Response><Start><Stream url="wss://h/s"/></Start></Response>')
    assert start.stream_url == "wss://h/s" and not start.bidirectional


@pytest.mark.parametrize(
    "bad",
    ["", "not xml", "<Html/>", "<Response><Connect><Stream/></Connect></Response>", "x" * 70000],
)
def test_parse_rejects_bad_twiml(bad: str) -> None:
    with pytest.raises(TwimlError):
        parse_twiml(bad)


def test_stream_url_maps_public_base_to_the_local_server() -> None:
    cfg = CallerConfig(
        url="http://127.0.0.1:8080", public_url="https://voice.example.com", account_sid="AC1",
        auth_token="t",
    )  # fmt: skip
    assert _connect_url("wss://voice.example.com/twilio/media", cfg) == (
        "ws://127.0.0.1:8080/twilio/media"
    )
    assert _connect_url("wss://elsewhere.example/x", cfg) == "wss://elsewhere.example/x"


# -- calls against the fake ----------------------------------------------------


@pytest.mark.fake_mode("echo")
async def test_signed_webhook_twiml_followed_and_audio_sent_exactly(
    fake_server: FakeVoiceServer,
) -> None:
    audio = short_audio()
    result = await run_call(
        config(fake_server, keep_audio=True, dtmf="1#", dtmf_at_s=0.5), audio=audio
    )
    rep = result.report
    assert rep.outcome is Outcome.COMPLETED, rep.error
    assert rep.ended_by == "caller"
    # Webhook: Twilio's fields, signed over the public URL, checked by the fake.
    assert fake_server.signature_ok == [True]
    form = fake_server.webhooks[0]
    assert form["CallStatus"] == "ringing" and form["Direction"] == "inbound"
    assert form["AccountSid"] == ACCOUNT_SID and form["CallSid"] == rep.call_sid
    assert form["ApiVersion"] == "2010-04-01" and form["To"] == "+15550100000"
    assert form["CallerCity"] == ""  # empty fields are sent (and signed) too
    assert rep.fallback_verbs == ("Say", "Hangup")
    # The stream: connected, start with the TwiML parameters, media..., stop.
    log = fake_server.streams[0]
    assert log.handshake_signature
    events = [m["event"] for m in log.messages]
    assert events[0] == "connected" and events[1] == "start" and events[-1] == "stop"
    start = log.messages[1]
    assert start["start"]["customParameters"] == {"token": TOKEN}
    assert start["start"]["callSid"] == rep.call_sid
    assert start["streamSid"].startswith("MZ") and start["streamSid"] == rep.stream_sid
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    seqs = [int(m["sequenceNumber"]) for m in log.messages[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    media = [m for m in log.messages if m["event"] == "media"]
    assert [int(m["media"]["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * i for i in range(len(media))]
    assert all(m["media"]["track"] == "inbound" for m in media)
    assert [m["dtmf"]["digit"] for m in log.messages if m["event"] == "dtmf"] == ["1", "#"]
    # Audio: every byte of the fixture, in 160-byte messages, at real time.
    assert bytes(log.audio) == audio.payload == result.sent_audio
    assert rep.media_sent == len(audio.payload) // FRAME_BYTES
    span = log.arrivals[-1] - log.arrivals[0]
    assert span == pytest.approx((len(media) - 1) * 0.02, abs=0.06)
    assert rep.send_lateness_ms.p50 is not None and rep.send_lateness_ms.p50 < 10
    # The echo comes back and is measured.
    assert result.received_audio == audio.payload[: len(result.received_audio)]
    assert len(result.received_audio) >= len(audio.payload) - 3 * FRAME_BYTES
    assert rep.jitter_ms.count > 10
    # Echoed silence frames are not agent speech: no barge-in, not an overlap.
    assert rep.barge_ins == []
    # The server's own stream parser accepts every frame the caller sent.
    state = TwilioStreamState()
    events = [e for at, text in log.raw for e in state.feed(text, at)]
    bad = {k: v for k, v in state.counters.as_dict().items() if v and k != "media_frames"}
    assert bad == {}
    assert state.counters.media_frames == rep.media_sent
    (started,) = [e for e in events if isinstance(e, StreamStarted)]
    assert started.custom_parameters == {"token": TOKEN} and started.call_sid == rep.call_sid
    assert [e.digit for e in events if isinstance(e, DtmfEvent)] == ["1", "#"]
    assert isinstance(events[-1], StreamStopped)


@pytest.mark.fake_mode("reply")
async def test_turn_latency_and_marks_after_playback(fake_server: FakeVoiceServer) -> None:
    audio = short_audio()
    result = await run_call(config(fake_server, keep_audio=True), audio=audio)
    rep = result.report
    assert rep.outcome is Outcome.COMPLETED, rep.error
    (turn,) = rep.turns
    assert not turn.agent_overlap
    # The fake answers after 200 ms of silence following its own idea of the
    # last speech frame; the manifest's speech end is within ~50 ms of it.
    assert turn.reply_received_ms is not None and 120 < turn.reply_received_ms < 500
    assert turn.reply_played_ms is not None
    assert turn.reply_played_ms >= turn.reply_received_ms + 30  # 40 ms prebuffer, 20 ms grid
    # The reply was sent all at once; its mark must come back only after it played.
    log = fake_server.streams[0]
    sent_at = log.sent_marks["reply"]
    echoed_at = log.echoed_marks["reply"]
    reply_bytes = rep.agent_audio_bytes
    assert echoed_at - sent_at >= reply_bytes / 8000 - 0.005
    assert echoed_at - sent_at < reply_bytes / 8000 + 0.2
    assert rep.marks_received == rep.marks_echoed == 1
    # What the caller heard: the reply's audio, in order, inside the played track.
    assert result.received_audio in result.played_audio
    assert rep.gaps == 0


# 3 s of agent speech, sent at once when the stream starts.
@pytest.mark.fake_mode("barge", agent_audio=LIB.load("book_appointment").payload[4000:28000])
async def test_clear_drops_playback_and_returns_marks(fake_server: FakeVoiceServer) -> None:
    goodbye = LIB.load("goodbye").payload
    audio = CallerAudio(
        name="late-goodbye",
        payload=SILENCE * 2400 + goodbye[2400:6000] + SILENCE * 800,
        utterances=(Utterance(0.32, 0.73),),
    )
    result = await run_call(config(fake_server, keep_audio=True), audio=audio)
    rep = result.report
    assert rep.outcome is Outcome.COMPLETED, rep.error
    assert rep.clears == 1
    log = fake_server.streams[0]
    # The greeting mark came back at the clear, long before 3 s could play.
    assert log.echoed_marks["greeting"] - log.sent_marks["greeting"] < 1.0
    assert rep.dropped_on_clear_bytes > 8000
    (barge,) = rep.barge_ins
    assert barge.result == "cleared"
    assert barge.clear_ms is not None and barge.clear_ms < 100
    # After the clear the earpiece is silent: played agent audio < 1 s.
    det = SpeechDetector()
    played = result.played_audio
    audible = [
        i for i in range(0, len(played), FRAME_BYTES) if det.is_speech(played[i : i + FRAME_BYTES])
    ]
    assert audible and (audible[-1] - audible[0]) / 8000 < 0.9
    assert len(result.received_audio) == 24000


# A 0.5 s greeting the agent speaks first.
@pytest.mark.fake_mode("greet", agent_audio=LIB.load("book_appointment").payload[4000:8000])
async def test_waits_for_the_greeting_before_speaking(fake_server: FakeVoiceServer) -> None:
    result = await run_call(config(fake_server, wait_for_greeting=True), audio=short_audio())
    rep = result.report
    assert rep.outcome is Outcome.COMPLETED, rep.error
    assert not rep.greeting_timed_out
    assert rep.first_agent_audio_ms is not None and rep.first_agent_audio_ms < 100
    log = fake_server.streams[0]
    assert "greeting" in log.echoed_marks
    # Silence while the greeting played (40 ms prebuffer + 0.5 s + 0.3 s quiet).
    det = SpeechDetector()
    first_speech = next(
        i for i in range(0, len(log.audio), FRAME_BYTES) if det.is_speech(log.audio[i : i + 160])
    )
    assert first_speech / 8000 >= 0.8
    assert log.arrivals[first_speech // FRAME_BYTES] > log.echoed_marks["greeting"]
    assert rep.barge_ins == []
    (turn,) = rep.turns
    assert not turn.agent_overlap and turn.reply_received_ms is not None


@pytest.mark.fake_mode("close")
async def test_server_close_ends_the_call_without_stop(fake_server: FakeVoiceServer) -> None:
    result = await run_call(config(fake_server), audio=short_audio())
    rep = result.report
    assert rep.outcome is Outcome.COMPLETED and rep.ended_by == "server"
    assert rep.media_sent < 20
    assert "stop" not in [m["event"] for m in fake_server.streams[0].messages]


@pytest.mark.fake_mode("busy")
async def test_busy_twiml_is_recorded(fake_server: FakeVoiceServer) -> None:
    result = await run_call(config(fake_server), audio=short_audio())
    assert result.report.outcome is Outcome.NO_STREAM
    assert result.report.twiml_verbs == ("Say", "Hangup")
    assert fake_server.streams == []


@pytest.mark.fake_mode("echo")
async def test_wrong_auth_token_is_forbidden(fake_server: FakeVoiceServer) -> None:
    result = await run_call(config(fake_server, auth_token="wrong"), audio=short_audio())
    assert result.report.outcome is Outcome.FORBIDDEN
    assert fake_server.signature_ok == [False]


@pytest.mark.fake_mode("hang")
async def test_bounded_when_the_webhook_never_answers(fake_server: FakeVoiceServer) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await run_call(config(fake_server, http_timeout_s=0.3), audio=short_audio())
    assert result.report.outcome is Outcome.TIMEOUT
    assert loop.time() - t0 < 2.0
    # The run deadline bounds everything even with generous per-call limits.
    t0 = loop.time()
    summary = await run_calls(
        config(fake_server, calls=3, concurrency=3, http_timeout_s=30.0, deadline_s=0.5)
    )
    assert summary.outcomes == {"timeout": 3}
    assert loop.time() - t0 < 3.0


@pytest.mark.fake_mode("reply")
async def test_five_concurrent_calls_summary(fake_server: FakeVoiceServer, tmp_path: Path) -> None:
    summary = await run_calls(
        config(
            fake_server,
            calls=5,
            concurrency=5,
            ramp_s=0.1,
            audio=("goodbye", "yes_that_works"),
            silence_before_s=0.0,
            silence_after_s=0.6,
            record_dir=str(tmp_path),
        )
    )
    assert summary.outcomes == {"completed": 5}, summary.errors
    assert len(fake_server.streams) == 5
    assert summary.turns == 5 and summary.turns_answered == 5
    assert summary.turn_latency_received_ms.count == 5
    assert summary.turn_latency_received_ms.p99 is not None
    assert summary.turn_latency_received_ms.p99 < 800
    # The fake's naive endpointing may split "Yes, that works" at the comma.
    assert summary.marks_echoed == summary.marks_received >= 5
    assert [r.audio for r in summary.call_reports] == [
        "goodbye",
        "yes_that_works",
        "goodbye",
        "yes_that_works",
        "goodbye",
    ]
    decoded = json.loads(msgspec.json.encode(summary))
    assert decoded["calls"] == 5 and len(decoded["call_reports"]) == 5
    render_summary(summary)
    wavs = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert len(wavs) == 15
    # The caller-side recording holds exactly what that call's server received.
    by_sid = {s.messages[1]["start"]["callSid"]: bytes(s.audio) for s in fake_server.streams}
    for rep in summary.call_reports:
        path = tmp_path / f"{rep.index:04d}-{rep.call_sid}-caller.wav"
        assert await asyncio.to_thread(read_mulaw_wav, path) == by_sid[rep.call_sid]


@pytest.mark.fake_mode("echo")
async def test_cli_writes_json(fake_server: FakeVoiceServer, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    args = [
        "--url", fake_server.base_url,
        "--public-url", PUBLIC_URL,
        "--account-sid", ACCOUNT_SID,
        "--auth-token", AUTH_TOKEN,
        "--calls", "1",
        "--audio", "goodbye",
        "--audio-dir", str(AUDIO_DIR),
        "--silence-before", "0",
        "--silence-after", "0",
        "--duration", "0.6",
        "--json", str(out),
        "--quiet",
    ]  # fmt: skip
    # The CLI owns its event loop; run it off this test's loop.
    code = await asyncio.to_thread(cli_main, args)
    assert code == 0
    data = json.loads(out.read_text())
    assert data["outcomes"] == {"completed": 1}
    assert data["call_reports"][0]["media_sent"] == 30
    assert AUTH_TOKEN not in out.read_text()


@pytest.mark.parametrize(
    "extra",
    [["--calls", "0"], ["--audio", ","], ["--concurrency", "0"]],
)
def test_cli_rejects_bad_arguments(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--url", "http://127.0.0.1:9", "--account-sid", ACCOUNT_SID, "--auth-token", "t"]
    with pytest.raises(SystemExit) as exc:
        cli_main(args + extra)
    assert exc.value.code == 2


def test_cli_unknown_audio_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--url", "http://127.0.0.1:9", "--account-sid", ACCOUNT_SID, "--auth-token", "t"]
    code = cli_main([*args, "--audio", "no_such_phrase", "--audio-dir", str(AUDIO_DIR)])
    assert code == 2
    assert "unknown audio" in capsys.readouterr().err
