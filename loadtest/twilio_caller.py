"""A load caller that behaves like Twilio towards voxgate.

For each simulated call it posts the signed voice webhook, follows the TwiML's
``<Connect><Stream>`` to the Media Streams WebSocket, streams real µ-law caller
audio at real time in 20 ms messages, plays the agent's audio on a phone-like
playback clock (echoing marks when their audio has played, honouring
``clear``), and measures what a caller would notice: turn latency, jitter of
the server's media, playback gaps and barge-in reaction time.

``run_call`` runs one call; ``run_calls`` runs many with a concurrency cap, a
ramp and an overall deadline, and returns a ``Summary``. Every loop here is
bounded by the per-call ``max_call_s`` or the run's ``deadline_s``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import math
import secrets
import time
import xml.etree.ElementTree as ET
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
from rich.table import Table

from loadtest.audio import (
    FRAME_BYTES,
    FRAME_S,
    MULAW_SILENCE,
    SAMPLE_RATE,
    CallerAudio,
    FixtureLibrary,
    SpeechDetector,
    default_audio_dir,
    write_mulaw_wav,
)
from loadtest.playback import PlaybackBuffer, PlaybackStep
from voxgate.media.twilio_signature import compute_signature

__all__ = [
    "BargeIn",
    "CallReport",
    "CallResult",
    "CallerConfig",
    "Outcome",
    "Stats",
    "Summary",
    "Turn",
    "Twiml",
    "TwimlError",
    "build_call_audio",
    "parse_twiml",
    "render_summary",
    "run_call",
    "run_calls",
    "summarize",
    "webhook_form",
]

_MAX_TWIML_BYTES = 64 * 1024
_SILENT_FRAME = bytes([MULAW_SILENCE]) * FRAME_BYTES
# How long the earpiece must stay quiet before the greeting counts as over.
_GREETING_QUIET_S = 0.3


class CallerConfig(msgspec.Struct, kw_only=True):
    """Everything a load run needs; the CLI flags map one to one."""

    url: str  # where the server really listens, e.g. http://127.0.0.1:8080
    account_sid: str
    auth_token: str
    public_url: str | None = None  # base URL Twilio would use (signatures, stream URL)
    webhook_path: str = "/twilio/webhook"
    to: str = "+15550100000"
    from_number: str = "+15550109999"
    calls: int = 1
    concurrency: int = 1
    ramp_s: float = 0.0  # call starts spread evenly over this many seconds
    audio: tuple[str, ...] = ("book_appointment",)
    sequence: bool = False  # one call plays all of ``audio`` in order
    gap_s: float = 3.0  # silence between sequence parts (the agent's turn)
    silence_before_s: float = 0.5
    silence_after_s: float = 3.0
    duration_s: float | None = None  # exact call length (truncate or pad silence)
    wait_for_greeting: bool = False  # send silence until the agent's greeting has played
    greeting_timeout_s: float = 15.0
    dtmf: str = ""  # digits sent as dtmf events, one every 200 ms...
    dtmf_at_s: float | None = None  # ...from here (default: when the audio ends)
    audio_dir: str | None = None
    prebuffer_s: float = 0.04  # the phone's jitter buffer before a talkspurt plays
    gap_max_s: float = 0.5  # longer playback silences are turn ends, not gaps
    silence_dbfs: float = -50.0  # agent audio below this RMS counts as silence
    barge_in_timeout_s: float = 1.5
    http_timeout_s: float = 10.0
    max_call_s: float | None = None  # default: audio length + 30 s
    deadline_s: float | None = None  # whole run; default: derived from calls/ramp
    record_dir: str | None = None
    keep_audio: bool = False  # keep sent/received audio on each CallResult


class Outcome(enum.StrEnum):
    COMPLETED = "completed"  # the stream ran and ended by hang-up or server close
    NO_STREAM = "no_stream"  # TwiML without <Stream> (busy, fallback, unknown number)
    FORBIDDEN = "forbidden"  # webhook answered 403
    HTTP_ERROR = "http_error"
    BAD_TWIML = "bad_twiml"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    ERROR = "error"


class TwimlError(Exception):
    """The webhook's answer is not TwiML we can follow."""


class Twiml(msgspec.Struct, frozen=True):
    """The parts of a TwiML answer a caller acts on."""

    verbs: tuple[str, ...]
    stream_url: str | None = None
    parameters: dict[str, str] = {}
    bidirectional: bool = True  # <Connect><Stream>; <Start><Stream> is listen-only
    fallback_verbs: tuple[str, ...] = ()  # what runs after the stream ends
    say: tuple[str, ...] = ()
    dial: str | None = None
    # <Connect action>: Twilio asks this URL what to do once the stream ends
    # (and never reaches the verbs after <Connect>).
    action: str | None = None


def parse_twiml(text: str | bytes) -> Twiml:
    """Parse a voice webhook answer; raises ``TwimlError`` if it is not TwiML."""
    if len(text) > _MAX_TWIML_BYTES:
        raise TwimlError("TwiML answer too large")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, not <Response>")
    verbs: list[str] = []
    stream_url: str | None = None
    params: dict[str, str] = {}
    bidirectional = True
    fallback: list[str] = []
    say: list[str] = []
    dial: str | None = None
    action: str | None = None
    for verb in root:
        verbs.append(verb.tag)
        if stream_url is not None:
            fallback.append(verb.tag)
        if verb.tag == "Say":
            say.append((verb.text or "").strip())
        elif verb.tag == "Dial" and dial is None:
            dial = (verb.text or "").strip() or "".join(
                (child.text or "").strip() for child in verb
            )
        elif verb.tag in ("Connect", "Start") and stream_url is None:
            stream = verb.find("Stream")
            if stream is None:
                continue
            url = stream.get("url")
            if not url:
                raise TwimlError("<Stream> without url")
            stream_url = url
            bidirectional = verb.tag == "Connect"
            if bidirectional:
                action = verb.get("action") or None
            for p in stream.findall("Parameter"):
                name = p.get("name")
                if name is None:
                    raise TwimlError("<Parameter> without name")
                params[name] = p.get("value", "")
    return Twiml(
        verbs=tuple(verbs),
        stream_url=stream_url,
        parameters=params,
        bidirectional=bidirectional,
        fallback_verbs=tuple(fallback),
        say=tuple(say),
        dial=dial,
        action=action,
    )


def webhook_form(*, account_sid: str, call_sid: str, from_number: str, to: str) -> dict[str, str]:
    """The voice webhook parameters Twilio posts for a new inbound call."""
    # Twilio sends the geographic fields even when it knows nothing: empty
    # values are part of what it signs.
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "CalledCity": "",
        "CalledCountry": "US",
        "CalledState": "",
        "CalledZip": "",
        "Caller": from_number,
        "CallerCity": "",
        "CallerCountry": "US",
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": from_number,
        "FromCity": "",
        "FromCountry": "US",
        "FromState": "",
        "FromZip": "",
        "To": to,
        "ToCity": "",
        "ToCountry": "US",
        "ToState": "",
        "ToZip": "",
    }


def _http_to_ws(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _connect_url(stream_url: str, config: CallerConfig) -> str:
    """Where to open the stream: the TwiML URL, mapped from the public base
    to the address the server really listens on (a proxy would do this)."""
    public = _http_to_ws((config.public_url or config.url).rstrip("/"))
    local = _http_to_ws(config.url.rstrip("/"))
    if stream_url.startswith(public + "/") or stream_url == public:
        return local + stream_url[len(public) :]
    return stream_url


class Stats(msgspec.Struct):
    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None


def _percentile(ordered: Sequence[float], q: float) -> float:
    # Nearest-rank on sorted data: always a value that was actually observed.
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def make_stats(values: Sequence[float]) -> Stats:
    if not values:
        return Stats()
    ordered = sorted(values)
    return Stats(
        count=len(ordered),
        p50=round(_percentile(ordered, 50), 3),
        p95=round(_percentile(ordered, 95), 3),
        p99=round(_percentile(ordered, 99), 3),
        max=round(ordered[-1], 3),
        mean=round(sum(ordered) / len(ordered), 3),
    )


class Turn(msgspec.Struct):
    """One caller utterance and how fast the agent answered it."""

    index: int
    speech_end_s: float  # offset in the call's audio
    reply_received_ms: float | None = None  # end of speech -> first audible agent media
    reply_played_ms: float | None = None  # ... -> first audible agent audio played
    agent_overlap: bool = False  # agent was audible as the caller stopped


class BargeIn(msgspec.Struct):
    """The caller started speaking while agent audio was playing."""

    speech_start_s: float
    clear_ms: float | None = None  # speech start -> server's clear
    result: str = "pending"  # cleared | missed | drained


class CallReport(msgspec.Struct, kw_only=True):
    """Per-call numbers for the JSON report."""

    index: int
    call_sid: str
    stream_sid: str | None
    audio: str
    outcome: Outcome
    ended_by: str | None = None  # caller | server | timeout
    close_code: int | None = None
    error: str | None = None
    twiml_verbs: tuple[str, ...] = ()
    fallback_verbs: tuple[str, ...] = ()
    # What the <Connect action> answered after the server ended the stream.
    action_verbs: tuple[str, ...] = ()
    webhook_ms: float | None = None
    connect_ms: float | None = None
    first_agent_audio_ms: float | None = None  # first media frame -> first audible agent media
    greeting_timed_out: bool = False
    duration_s: float = 0.0
    media_sent: int = 0
    media_received: int = 0
    agent_audio_bytes: int = 0
    marks_received: int = 0
    marks_echoed: int = 0
    clears: int = 0
    dtmf_sent: int = 0
    protocol_errors: int = 0
    gaps: int = 0
    gap_ms_total: float = 0.0
    dropped_on_clear_bytes: int = 0
    max_buffered_ms: float = 0.0
    jitter_ms: Stats = msgspec.field(default_factory=Stats)
    send_lateness_ms: Stats = msgspec.field(default_factory=Stats)
    turns: list[Turn] = []
    barge_ins: list[BargeIn] = []


@dataclass(slots=True)
class CallResult:
    """One call: its report plus the raw samples a summary aggregates."""

    report: CallReport
    # Compact float arrays: a long run keeps 50 samples per second per call.
    jitter_ms: array[float] = field(default_factory=lambda: array("d"))
    send_lateness_ms: array[float] = field(default_factory=lambda: array("d"))
    gaps_ms: list[float] = field(default_factory=list)
    mark_names_echoed: list[str] = field(default_factory=list)
    # Only with ``keep_audio`` or ``record_dir``.
    sent_audio: bytes = b""
    received_audio: bytes = b""
    played_audio: bytes = b""


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def build_call_audio(config: CallerConfig, index: int, library: FixtureLibrary) -> CallerAudio:
    """The audio call number ``index`` plays, silences and length applied."""
    if not config.audio:
        raise ValueError("no audio configured")
    if config.sequence:
        audio = library.sequence(config.audio, config.gap_s)
    else:
        audio = library.load(config.audio[index % len(config.audio)])
    audio = audio.padded(config.silence_before_s, config.silence_after_s)
    if config.duration_s is not None:
        if config.duration_s > audio.duration_s:
            audio = audio.padded(0.0, config.duration_s - audio.duration_s)
        audio = audio.truncated(config.duration_s)
    return audio


def _library(config: CallerConfig) -> FixtureLibrary:
    return FixtureLibrary(Path(config.audio_dir) if config.audio_dir else default_audio_dir())


class _Stream:
    """One Media Streams WebSocket as Twilio runs it."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        config: CallerConfig,
        audio: CallerAudio,
        report: CallReport,
        result: CallResult,
        detector: SpeechDetector,
        parameters: dict[str, str],
        record: bool,
        bidirectional: bool = True,
    ) -> None:
        self.ws = ws
        self.config = config
        self.audio = audio
        self.report = report
        self.result = result
        self.detector = detector
        self.parameters = parameters
        self.record = record
        self.bidirectional = bidirectional
        # time.monotonic, not loop.time(): uvloop's clock ticks in whole
        # milliseconds and is cached per loop iteration, too coarse for jitter.
        self.clock = time.monotonic
        self.seq = 0
        self.server_closed = asyncio.Event()
        self.stream_sid = report.stream_sid or ""
        self.playback = PlaybackBuffer(
            self.clock(), prebuffer_s=config.prebuffer_s, gap_max_s=config.gap_max_s
        )
        self.turn_ends: list[tuple[float, Turn]] = []  # (monotonic end, turn)
        self.barges: list[tuple[float, BargeIn]] = []
        self.last_speech_rx: float | None = None
        self.last_speech_played: float | None = None
        self.speech_queued_until = 0  # playback position after the newest agent speech
        self.t0: float | None = None  # when the first media frame was due
        self._media_prefix = (
            '{"event":"media","streamSid":"' + self.stream_sid + '","sequenceNumber":"'
        )
        self.prev_rx: tuple[float, float] | None = None  # (arrival, payload duration)
        self.sent = bytearray()
        self.received = bytearray()
        self.played = bytearray()

    def _next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def _send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _send_marks(self, names: list[str]) -> None:
        for name in names:
            await self._send(
                msgspec.json.encode(
                    {
                        "event": "mark",
                        "sequenceNumber": self._next_seq(),
                        "streamSid": self.stream_sid,
                        "mark": {"name": name},
                    }
                ).decode()
            )
            self.report.marks_echoed += 1
            self.result.mark_names_echoed.append(name)

    async def open(self) -> None:
        cfg = self.config
        await self._send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "start": {
                "accountSid": cfg.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.report.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
        await self._send(msgspec.json.encode(start).decode())

    # -- receiving ---------------------------------------------------------

    async def receive_loop(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._on_text(msg.data)
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    break
                else:
                    self.report.protocol_errors += 1  # Twilio expects JSON text only
        finally:
            self.report.close_code = self.ws.close_code
            self.server_closed.set()

    async def _on_text(self, data: str) -> None:
        now = self.clock()
        try:
            msg = msgspec.json.decode(data, type=_ServerMessage)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.report.protocol_errors += 1
            return
        if msg.streamSid != self.stream_sid:
            self.report.protocol_errors += 1
            return
        if isinstance(msg, _MediaOut):
            self._on_media(msg.media.payload, now)
        elif isinstance(msg, _MarkOut):
            self.report.marks_received += 1
            self.playback.add_mark(msg.mark.name)
        else:
            self.report.clears += 1
            await self._send_marks(self.playback.clear())
            for started, barge in self.barges:
                if barge.result == "pending":
                    barge.clear_ms = round((now - started) * 1000, 3)
                    barge.result = "cleared"

    def _on_media(self, payload_b64: str, now: float) -> None:
        try:
            payload = base64.b64decode(payload_b64, validate=True)
        except (binascii.Error, ValueError):
            self.report.protocol_errors += 1
            return
        if not self.bidirectional or not payload:
            self.report.protocol_errors += 1
            return
        self.report.media_received += 1
        self.report.agent_audio_bytes += len(payload)
        if self.prev_rx is not None:
            prev_at, prev_dur = self.prev_rx
            interval = now - prev_at
            # Inter-arrival deviation within a talkspurt; a long pause is the
            # agent being quiet, not jitter.
            if interval <= self.config.gap_max_s:
                self.result.jitter_ms.append(abs(interval - prev_dur) * 1000)
        self.prev_rx = (now, len(payload) / SAMPLE_RATE)
        if self.record:
            self.received += payload
        self.playback.push(payload, now)
        if self.detector.is_speech(payload):
            self.speech_queued_until = self.playback.written
            self.last_speech_rx = now
            if self.report.first_agent_audio_ms is None and self.t0 is not None:
                self.report.first_agent_audio_ms = round((now - self.t0) * 1000, 3)
            for ended, turn in self.turn_ends:
                if turn.reply_received_ms is None and now > ended:
                    turn.reply_received_ms = round((now - ended) * 1000, 3)

    # -- sending -----------------------------------------------------------

    async def _on_played(self, step: PlaybackStep) -> None:
        for slot in step.slots:
            if self.record:
                self.played += slot.audio
            if slot.filled and self.detector.is_speech(slot.audio[: slot.filled]):
                self.last_speech_played = slot.at
                for ended, turn in self.turn_ends:
                    if turn.reply_played_ms is None and slot.at > ended:
                        turn.reply_played_ms = round((slot.at - ended) * 1000, 3)
        if step.marks:
            await self._send_marks(step.marks)

    def _check_barges(self, now: float) -> None:
        for started, barge in self.barges:
            if barge.result != "pending":
                continue
            if not self._agent_speaking(now):
                barge.result = "drained"
            elif now - started > self.config.barge_in_timeout_s:
                barge.result = "missed"

    async def _tick(self, t0: float, i: int) -> float | None:
        """Wait for frame ``i``'s slot on the grid; None once the server hung up."""
        if self.server_closed.is_set():
            return None
        target = t0 + i * FRAME_S
        delay = target - self.clock()
        if delay > 0:
            # A plain sleep per frame is the cheapest timer; a server close is
            # noticed within one frame.
            await asyncio.sleep(delay)
            if self.server_closed.is_set():
                return None
        now = self.clock()
        self.result.send_lateness_ms.append(max(0.0, now - target) * 1000)
        return now

    async def _send_frame(self, i: int, frame: bytes, now: float) -> None:
        await self._send(
            self._media_prefix
            + self._next_seq()
            + '","media":{"track":"inbound","chunk":"'
            + str(i + 1)
            + '","timestamp":"'
            + str(i * 20)
            + '","payload":"'
            + base64.b64encode(frame).decode()
            + '"}}'
        )
        self.report.media_sent += 1
        if self.record:
            self.sent += frame

    def _agent_speaking(self, now: float) -> bool:
        """Agent speech (not just silence frames) is queued or sounding now."""
        if self.playback.played < self.speech_queued_until:
            return True
        return self.last_speech_played is not None and now - self.last_speech_played < FRAME_S

    def _greeting_done(self, now: float) -> bool:
        # The agent spoke and its audio has finished playing for a moment.
        return (
            self.last_speech_played is not None
            and not self._agent_speaking(now)
            and now - self.last_speech_played >= _GREETING_QUIET_S
        )

    async def send_loop(self) -> None:
        """Caller audio at real time, 20 ms per message, on a monotonic grid."""
        cfg = self.config
        t0 = self.clock()
        self.t0 = t0
        i = 0
        if cfg.wait_for_greeting:
            # A polite caller listens to the greeting before speaking.
            while True:
                now = await self._tick(t0, i)
                if now is None:
                    return
                await self._send_frame(i, _SILENT_FRAME, now)
                i += 1
                await self._on_played(self.playback.advance(now))
                if self._greeting_done(now):
                    break
                if now - t0 >= cfg.greeting_timeout_s:
                    self.report.greeting_timed_out = True
                    break
        base = i
        payload = self.audio.payload
        n_frames = max(1, math.ceil(len(payload) / FRAME_BYTES))
        ends = {min(n_frames - 1, int(u.end_s / FRAME_S)): u for u in self.audio.utterances}
        starts = {min(n_frames - 1, int(u.start_s / FRAME_S)): u for u in self.audio.utterances}
        digits: dict[int, list[str]] = {}
        for tone in self.audio.dtmf:
            digits.setdefault(min(n_frames - 1, int(tone.end_s / FRAME_S)), []).append(tone.digit)
        if cfg.dtmf:
            at = self.audio.duration_s if cfg.dtmf_at_s is None else cfg.dtmf_at_s
            for n, d in enumerate(cfg.dtmf):
                k = min(n_frames - 1, int((at + 0.2 * n) / FRAME_S))
                digits.setdefault(k, []).append(d)
        for k in range(n_frames):
            i = base + k
            now = await self._tick(t0, i)
            if now is None:
                return
            frame = payload[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
            if len(frame) < FRAME_BYTES:
                frame += _SILENT_FRAME[len(frame) :]
            await self._send_frame(i, frame, now)
            if k in starts and self._agent_speaking(now):
                u = starts[k]
                self.barges.append((now, BargeIn(speech_start_s=round(u.start_s, 3))))
            if k in ends:
                u = ends[k]
                overlap = self.last_speech_rx is not None and now - self.last_speech_rx < 0.2
                turn = Turn(
                    index=len(self.turn_ends), speech_end_s=round(u.end_s, 3), agent_overlap=overlap
                )
                self.turn_ends.append((now, turn))
            for digit in digits.get(k, ()):
                await self._send(
                    msgspec.json.encode(
                        {
                            "event": "dtmf",
                            "streamSid": self.stream_sid,
                            "sequenceNumber": self._next_seq(),
                            "dtmf": {"track": "inbound_track", "digit": digit},
                        }
                    ).decode()
                )
                self.report.dtmf_sent += 1
            await self._on_played(self.playback.advance(now))
            self._check_barges(now)

    async def hang_up(self) -> None:
        await self._send(
            msgspec.json.encode(
                {
                    "event": "stop",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "stop": {
                        "accountSid": self.config.account_sid,
                        "callSid": self.report.call_sid,
                    },
                }
            ).decode()
        )

    def finish(self) -> None:
        for _, barge in self.barges:
            if barge.result == "pending":
                barge.result = "missed" if self._agent_speaking(self.clock()) else "drained"
        self.report.turns = [t for _, t in self.turn_ends]
        self.report.barge_ins = [b for _, b in self.barges]
        self.report.gaps = len(self.playback.gaps_s)
        self.result.gaps_ms = [g * 1000 for g in self.playback.gaps_s]
        self.report.gap_ms_total = round(sum(self.result.gaps_ms), 3)
        self.report.dropped_on_clear_bytes = self.playback.dropped_on_clear
        self.report.max_buffered_ms = self.playback.max_buffered / SAMPLE_RATE * 1000
        self.report.jitter_ms = make_stats(self.result.jitter_ms)
        self.report.send_lateness_ms = make_stats(self.result.send_lateness_ms)
        self.result.sent_audio = bytes(self.sent)
        self.result.received_audio = bytes(self.received)
        self.result.played_audio = bytes(self.played)


class _MediaBody(msgspec.Struct):
    payload: str


class _MarkBody(msgspec.Struct):
    name: str


class _MediaOut(msgspec.Struct, tag_field="event", tag="media"):
    streamSid: str
    media: _MediaBody


class _MarkOut(msgspec.Struct, tag_field="event", tag="mark"):
    streamSid: str
    mark: _MarkBody


class _ClearOut(msgspec.Struct, tag_field="event", tag="clear"):
    streamSid: str


_ServerMessage = _MediaOut | _MarkOut | _ClearOut


async def run_call(
    config: CallerConfig,
    *,
    index: int = 0,
    session: aiohttp.ClientSession | None = None,
    library: FixtureLibrary | None = None,
    audio: CallerAudio | None = None,
) -> CallResult:
    """One simulated inbound Twilio call, start to hang-up; never raises for
    anything the server does (that is reported on the result)."""
    if audio is None:
        # Reading fixture files is blocking I/O: keep it off the media loop.
        lib = library if library is not None else await asyncio.to_thread(_library, config)
        audio = await asyncio.to_thread(build_call_audio, config, index, lib)
    report = CallReport(
        index=index, call_sid=_sid("CA"), stream_sid=None, audio=audio.name, outcome=Outcome.ERROR
    )
    result = CallResult(report=report)
    max_call_s = config.max_call_s if config.max_call_s is not None else audio.duration_s + 30
    own_session = session is None
    if session is None:
        session = aiohttp.ClientSession()
    started = time.monotonic()
    try:
        async with asyncio.timeout(max_call_s):
            await _call(config, session, audio, report, result)
    except TimeoutError:
        report.outcome = Outcome.TIMEOUT
        report.ended_by = report.ended_by or "timeout"
        report.error = report.error or f"call did not finish within {max_call_s:.1f} s"
    finally:
        report.duration_s = round(time.monotonic() - started, 3)
        if own_session:
            await session.close()
    if config.record_dir:
        await asyncio.to_thread(_write_recordings, Path(config.record_dir), result)
    return result


async def _call(
    config: CallerConfig,
    session: aiohttp.ClientSession,
    audio: CallerAudio,
    report: CallReport,
    result: CallResult,
) -> None:
    base = (config.public_url or config.url).rstrip("/")
    form = webhook_form(
        account_sid=config.account_sid,
        call_sid=report.call_sid,
        from_number=config.from_number,
        to=config.to,
    )
    signed_url = base + config.webhook_path
    headers = {"X-Twilio-Signature": compute_signature(config.auth_token, signed_url, form)}
    t = time.monotonic()
    try:
        async with session.post(
            config.url.rstrip("/") + config.webhook_path,
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.http_timeout_s),
        ) as resp:
            body = await resp.read()
            status = resp.status
    except TimeoutError:
        report.outcome = Outcome.TIMEOUT
        report.error = "webhook timed out"
        return
    except aiohttp.ClientError as exc:
        report.outcome = Outcome.HTTP_ERROR
        report.error = f"webhook: {exc.__class__.__name__}: {exc}"
        return
    report.webhook_ms = round((time.monotonic() - t) * 1000, 3)
    if status == 403:
        report.outcome = Outcome.FORBIDDEN
        return
    if status != 200:
        report.outcome = Outcome.HTTP_ERROR
        report.error = f"webhook answered HTTP {status}"
        return
    try:
        twiml = parse_twiml(body)
    except TwimlError as exc:
        report.outcome = Outcome.BAD_TWIML
        report.error = str(exc)
        return
    report.twiml_verbs = twiml.verbs
    report.fallback_verbs = twiml.fallback_verbs
    if twiml.stream_url is None:
        report.outcome = Outcome.NO_STREAM
        return
    url = _connect_url(twiml.stream_url, config)
    ws_headers = {"X-Twilio-Signature": compute_signature(config.auth_token, twiml.stream_url, {})}
    t = time.monotonic()
    try:
        async with asyncio.timeout(config.http_timeout_s):
            ws = await session.ws_connect(
                url, headers=ws_headers, autoclose=False, autoping=True, compress=0
            )
    except TimeoutError:
        report.outcome = Outcome.CONNECT_FAILED
        report.error = "stream connect timed out"
        return
    except (aiohttp.ClientError, ValueError) as exc:
        report.outcome = Outcome.CONNECT_FAILED
        report.error = f"stream connect: {exc.__class__.__name__}: {exc}"
        return
    report.connect_ms = round((time.monotonic() - t) * 1000, 3)
    report.stream_sid = _sid("MZ")
    record = config.keep_audio or config.record_dir is not None
    stream = _Stream(
        ws,
        config,
        audio,
        report,
        result,
        SpeechDetector(config.silence_dbfs),
        twiml.parameters,
        record,
        twiml.bidirectional,
    )
    receiver: asyncio.Task[None] | None = None
    try:
        await stream.open()
        receiver = asyncio.create_task(stream.receive_loop())
        await stream.send_loop()
        if stream.server_closed.is_set():
            report.ended_by = "server"
        else:
            report.ended_by = "caller"
            await stream.hang_up()
        report.outcome = Outcome.COMPLETED
    except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
        if stream.server_closed.is_set():
            report.ended_by = "server"
            report.outcome = Outcome.COMPLETED
        else:
            report.outcome = Outcome.ERROR
            report.error = f"stream: {exc.__class__.__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await ws.close()
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
        stream.finish()
    if report.ended_by == "server" and twiml.action is not None:
        await _follow_action(config, session, twiml.action, report)


async def _follow_action(
    config: CallerConfig, session: aiohttp.ClientSession, action: str, report: CallReport
) -> None:
    """Like Twilio once a <Connect action> stream ends: post the signed call
    parameters to the action URL and note the verbs it answers."""
    form = webhook_form(
        account_sid=config.account_sid,
        call_sid=report.call_sid,
        from_number=config.from_number,
        to=config.to,
    )
    form["CallStatus"] = "in-progress"
    headers = {"X-Twilio-Signature": compute_signature(config.auth_token, action, form)}
    public = (config.public_url or config.url).rstrip("/")
    local = action
    if action.startswith(public + "/"):
        local = config.url.rstrip("/") + action[len(public) :]
    try:
        async with session.post(
            local,
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=config.http_timeout_s),
        ) as resp:
            body = await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        report.error = report.error or f"connect action: {exc.__class__.__name__}: {exc}"
        return
    if status != 200:
        report.error = report.error or f"connect action answered HTTP {status}"
        return
    try:
        report.action_verbs = parse_twiml(body).verbs
    except TwimlError as exc:
        report.error = report.error or f"connect action: {exc}"


def _write_recordings(root: Path, result: CallResult) -> None:
    root.mkdir(parents=True, exist_ok=True)
    r = result.report
    stem = f"{r.index:04d}-{r.call_sid}"
    write_mulaw_wav(root / f"{stem}-caller.wav", result.sent_audio)
    write_mulaw_wav(root / f"{stem}-agent-played.wav", result.played_audio)
    write_mulaw_wav(root / f"{stem}-agent-received.wav", result.received_audio)


class Summary(msgspec.Struct, kw_only=True):
    """A load run: aggregate numbers first, then every call's report."""

    calls: int
    concurrency: int
    wall_s: float
    outcomes: dict[str, int]
    ended_by: dict[str, int]
    turns: int
    turns_answered: int
    turns_overlapped: int
    turn_latency_received_ms: Stats
    turn_latency_played_ms: Stats
    jitter_ms: Stats
    gaps: int
    gap_ms: Stats
    barge_ins: int
    barge_ins_missed: int
    barge_in_clear_ms: Stats
    media_sent: int
    media_received: int
    marks_received: int
    marks_echoed: int
    clears: int
    protocol_errors: int
    webhook_ms: Stats
    connect_ms: Stats
    first_agent_audio_ms: Stats
    send_lateness_ms: Stats  # the caller's own pacing; large values void the run
    errors: list[str]
    call_reports: list[CallReport]


def summarize(results: Sequence[CallResult], *, concurrency: int, wall_s: float) -> Summary:
    reports = [r.report for r in results]
    outcomes: dict[str, int] = {}
    ended_by: dict[str, int] = {}
    for rep in reports:
        outcomes[rep.outcome.value] = outcomes.get(rep.outcome.value, 0) + 1
        if rep.ended_by:
            ended_by[rep.ended_by] = ended_by.get(rep.ended_by, 0) + 1
    turns = [t for rep in reports for t in rep.turns]
    clean = [t for t in turns if not t.agent_overlap]
    barges = [b for rep in reports for b in rep.barge_ins]
    errors: list[str] = []
    for rep in reports:
        if rep.error and rep.error not in errors and len(errors) < 20:
            errors.append(rep.error)
    return Summary(
        calls=len(reports),
        concurrency=concurrency,
        wall_s=round(wall_s, 3),
        outcomes=outcomes,
        ended_by=ended_by,
        turns=len(turns),
        turns_answered=sum(1 for t in turns if t.reply_received_ms is not None),
        turns_overlapped=len(turns) - len(clean),
        turn_latency_received_ms=make_stats(
            [t.reply_received_ms for t in clean if t.reply_received_ms is not None]
        ),
        turn_latency_played_ms=make_stats(
            [t.reply_played_ms for t in clean if t.reply_played_ms is not None]
        ),
        jitter_ms=make_stats([j for r in results for j in r.jitter_ms]),
        gaps=sum(rep.gaps for rep in reports),
        gap_ms=make_stats([g for r in results for g in r.gaps_ms]),
        barge_ins=len(barges),
        barge_ins_missed=sum(1 for b in barges if b.result == "missed"),
        barge_in_clear_ms=make_stats([b.clear_ms for b in barges if b.clear_ms is not None]),
        media_sent=sum(rep.media_sent for rep in reports),
        media_received=sum(rep.media_received for rep in reports),
        marks_received=sum(rep.marks_received for rep in reports),
        marks_echoed=sum(rep.marks_echoed for rep in reports),
        clears=sum(rep.clears for rep in reports),
        protocol_errors=sum(rep.protocol_errors for rep in reports),
        webhook_ms=make_stats([rep.webhook_ms for rep in reports if rep.webhook_ms is not None]),
        connect_ms=make_stats([rep.connect_ms for rep in reports if rep.connect_ms is not None]),
        first_agent_audio_ms=make_stats(
            [rep.first_agent_audio_ms for rep in reports if rep.first_agent_audio_ms is not None]
        ),
        send_lateness_ms=make_stats([v for r in results for v in r.send_lateness_ms]),
        errors=errors,
        call_reports=reports,
    )


async def run_calls(config: CallerConfig) -> Summary:
    """``config.calls`` calls, at most ``config.concurrency`` at once, starts
    spread over ``config.ramp_s``; stops by ``config.deadline_s`` at the latest."""
    if config.calls < 1 or config.concurrency < 1:
        raise ValueError("calls and concurrency must be at least 1")
    library = await asyncio.to_thread(_library, config)
    # A call's audio depends only on its index modulo the number of names.
    variants = 1 if config.sequence else len(config.audio)
    audios = await asyncio.to_thread(
        lambda: [build_call_audio(config, i, library) for i in range(variants)]
    )
    longest = max(a.duration_s for a in audios)
    per_call = config.max_call_s if config.max_call_s is not None else longest + 30
    waves = math.ceil(config.calls / config.concurrency)
    deadline = (
        config.deadline_s
        if config.deadline_s is not None
        else config.ramp_s + waves * per_call + 30
    )
    sem = asyncio.Semaphore(config.concurrency)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> CallResult:
            if config.ramp_s > 0 and config.calls > 1:
                await asyncio.sleep(max(0.0, t0 + config.ramp_s * i / config.calls - loop.time()))
            async with sem:
                return await run_call(
                    config,
                    index=i,
                    session=session,
                    library=library,
                    audio=audios[i % len(audios)],
                )

        tasks = [asyncio.create_task(one(i)) for i in range(config.calls)]
        done, pending = await asyncio.wait(tasks, timeout=deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        results: list[CallResult] = []
        for i, task in enumerate(tasks):
            if task in done and not task.cancelled() and task.exception() is None:
                results.append(task.result())
            else:
                exc = None if task.cancelled() or not task.done() else task.exception()
                report = CallReport(
                    index=i,
                    call_sid="",
                    stream_sid=None,
                    audio="",
                    outcome=Outcome.TIMEOUT if exc is None else Outcome.ERROR,
                    error="run deadline reached" if exc is None else repr(exc),
                )
                results.append(CallResult(report=report))
    return summarize(results, concurrency=config.concurrency, wall_s=loop.time() - t0)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_summary(summary: Summary) -> Table:
    """A rich table: the numbers an operator reads first."""
    table = Table(
        title=f"voxgate Twilio load: {summary.calls} calls, concurrency {summary.concurrency}"
    )
    table.add_column("metric")
    table.add_column("n", justify="right")
    for col in ("p50", "p95", "p99", "max"):
        table.add_column(col, justify="right")
    rows: list[tuple[str, Stats]] = [
        ("turn latency, received (ms)", summary.turn_latency_received_ms),
        ("turn latency, played (ms)", summary.turn_latency_played_ms),
        ("agent media jitter (ms)", summary.jitter_ms),
        ("playback gaps (ms)", summary.gap_ms),
        ("barge-in -> clear (ms)", summary.barge_in_clear_ms),
        ("webhook (ms)", summary.webhook_ms),
        ("stream connect (ms)", summary.connect_ms),
        ("first agent audio (ms)", summary.first_agent_audio_ms),
        ("caller send lateness (ms)", summary.send_lateness_ms),
    ]
    for name, s in rows:
        table.add_row(name, str(s.count), _fmt(s.p50), _fmt(s.p95), _fmt(s.p99), _fmt(s.max))
    table.caption = (
        f"outcomes {summary.outcomes}  ended by {summary.ended_by}  "
        f"turns {summary.turns_answered}/{summary.turns} answered "
        f"({summary.turns_overlapped} overlapped)  "
        f"media out/in {summary.media_sent}/{summary.media_received}  "
        f"marks in/echoed {summary.marks_received}/{summary.marks_echoed}  "
        f"clears {summary.clears}  "
        f"gaps {summary.gaps}  barge-ins missed {summary.barge_ins_missed}/{summary.barge_ins}  "
        f"protocol errors {summary.protocol_errors}  wall {summary.wall_s:.1f} s"
    )
    return table
