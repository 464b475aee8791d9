"""A lean Twilio caller for concurrency benchmarks: hundreds of streams from one core.

``twilio_caller`` models one phone faithfully (playback clock, speech
detection, turn latency); that costs tens of microseconds per frame, and at
300 calls the caller, not the server, becomes the bottleneck. ``run_fleet``
keeps only what a media-only benchmark needs, with Twilio's wire behaviour
unchanged:

* each call still posts the signed webhook, follows the TwiML's stream URL
  and sends ``connected``/``start`` with the call token;
* one shared ticker sends the next media message of every live call (no
  task or timer per call), in phase groups spread over the 20 ms period like
  independent streams; each message is built from pre-encoded bytes (the
  base64 payload and its JSON are encoded once per audio variant, only the
  stream prefix and sequence number differ) and written straight to the
  socket as a WebSocket frame, so a frame costs a concatenation and a write;
* the WebSocket client is a small ``asyncio.Protocol`` (the handshake, then
  frames): agent media is counted and timed without decoding its payload;
  marks are echoed on the next tick (when Twilio would have played them, to
  within a frame) and ``clear`` is honoured;
* calls end with ``stop`` and a close frame, like Twilio when the caller
  hangs up.

Client frames carry a zero masking key: masking is mandatory, its value is
not checked by servers, and a zero key leaves the payload as is (no per-byte
XOR in Python). Everything is bounded by the run's ``deadline_s``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import struct
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import msgspec

from loadtest.audio import FRAME_BYTES, FRAME_S, FixtureLibrary, default_audio_dir
from loadtest.twilio_caller import (
    CallerConfig,
    Stats,
    TwimlError,
    build_call_audio,
    make_stats,
    parse_twiml,
    webhook_form,
)
from voxgate.media.twilio_signature import compute_signature

__all__ = ["FleetCall", "FleetSummary", "encode_client_frame", "run_fleet"]

_ZERO_MASK = b"\x00\x00\x00\x00"
_MEDIA_EVENT = b'{"event":"media"'
_MAX_HANDSHAKE = 16 * 1024
# A gap: a live call's agent media paused for this long (the echo agent
# sends every 20 ms once its 200 ms delay line is full).
_GAP_S = 0.1


def encode_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client->server WebSocket frame with a zero masking key."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + _ZERO_MASK + payload


class _Mark(msgspec.Struct):
    name: str


class _MarkMessage(msgspec.Struct):
    mark: _Mark


_MARK_DECODER = msgspec.json.Decoder(_MarkMessage)


class FleetCall(asyncio.Protocol):
    """One call's WebSocket: handshake, then frames; fed by the fleet's tick."""

    def __init__(self, index: int, fleet: _Fleet, request: bytes, stream_sid: str) -> None:
        self.index = index
        self.fleet = fleet
        self.request = request
        self.stream_sid = stream_sid
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._upgraded = False
        self.seq = 0
        self.frame = 0  # next audio frame index
        self.frames: Sequence[bytes] = ()
        self.prefix = b""
        self.pending_marks: list[str] = []
        self.last_media: float | None = None
        self.media_received = 0
        self.marks_received = 0
        self.marks_echoed = 0
        self.clears = 0
        self.protocol_errors = 0
        self.gaps = 0
        self.closing = False
        self.error: str | None = None

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"closed during handshake: {exc}"))
        if not self.closing and self.error is None:
            self.error = f"connection lost mid-call: {exc}"
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HANDSHAKE:
                    self._fail("handshake answer too large")
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            del buffer[: end + 4]
            if b" 101 " not in status:
                self._fail(f"handshake refused: {status.decode(errors='replace')}")
                return
            self._upgraded = True
            self.handshake.set_result(None)
        self._frames()

    # -- frames ------------------------------------------------------------
    def _frames(self) -> None:
        buffer = self._buffer
        now = time.monotonic()
        offset = 0
        size = len(buffer)
        while size - offset >= 2:
            first = buffer[offset]
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if size - offset < 4:
                    break
                length = (buffer[offset + 2] << 8) | buffer[offset + 3]
                start = offset + 4
            elif length == 127:
                if size - offset < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
                start = offset + 10
            end = start + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode == 0x1 and first & 0x80:
                self._on_text(buffer, start, end, now)
            elif opcode == 0x8:
                self._on_close()
            elif opcode == 0x9:
                self._write(encode_client_frame(bytes(buffer[start:end]), 0xA))
            elif opcode != 0xA:
                self.protocol_errors += 1  # Twilio's peer sends single text frames only
            offset = end
        if offset:
            del buffer[:offset]

    def _on_text(self, buffer: bytearray, start: int, end: int, now: float) -> None:
        if buffer.startswith(_MEDIA_EVENT, start):
            self.media_received += 1
            last = self.last_media
            if last is not None:
                interval = now - last
                self.fleet.jitter_ms.append(abs(interval - FRAME_S) * 1000)
                if interval >= _GAP_S and not self.closing:
                    self.gaps += 1
            self.last_media = now
            return
        text = bytes(buffer[start:end])
        if b'"event":"mark"' in text:
            try:
                name = _MARK_DECODER.decode(text).mark.name
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.protocol_errors += 1
                return
            self.marks_received += 1
            # Echoed on the next tick: Twilio confirms once the audio before it played.
            self.pending_marks.append(name)
        elif b'"event":"clear"' in text:
            self.clears += 1
        else:
            self.protocol_errors += 1

    def _on_close(self) -> None:
        if not self.closing:
            # The server hung up first; answer the close like Twilio.
            self.closing = True
            self._write(encode_client_frame(struct.pack("!H", 1000), 0x8))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, reason: str) -> None:
        self.error = reason
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _write(self, frame: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    # -- sending (driven by the fleet) -------------------------------------
    def send_text(self, text: bytes) -> None:
        self._write(encode_client_frame(text))

    def _message(self, body: dict[str, object]) -> bytes:
        self.seq += 1
        return msgspec.json.encode(
            {"event": body.pop("event"), "sequenceNumber": str(self.seq), **body}
        )

    def open_stream(self, account_sid: str, call_sid: str, parameters: dict[str, str]) -> None:
        self.send_text(b'{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "accountSid": account_sid,
            "streamSid": self.stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        self.send_text(
            self._message({"event": "start", "start": start, "streamSid": self.stream_sid})
        )
        self.prefix = b'{"event":"media","streamSid":"' + self.stream_sid.encode()

    def tick(self) -> bool:
        """Send this tick's media (and due mark echoes); False once the audio is over."""
        if self.pending_marks:
            for name in self.pending_marks:
                self.send_text(
                    self._message(
                        {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
                    )
                )
                self.marks_echoed += 1
            self.pending_marks.clear()
        k = self.frame
        if k >= len(self.frames):
            return False
        self.seq += 1
        text = self.prefix + b'","sequenceNumber":"' + str(self.seq).encode() + self.frames[k]
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        n = len(text)
        if 126 <= n < 65536:
            transport.write(struct.pack("!BBH", 0x81, 0xFE, n) + _ZERO_MASK + text)
        else:
            transport.write(encode_client_frame(text))
        self.frame = k + 1
        return True

    def hang_up(self, account_sid: str, call_sid: str) -> None:
        self.closing = True
        stop = {"accountSid": account_sid, "callSid": call_sid}
        self.send_text(self._message({"event": "stop", "streamSid": self.stream_sid, "stop": stop}))
        self._write(encode_client_frame(struct.pack("!H", 1000), 0x8))


class FleetSummary(msgspec.Struct, kw_only=True):
    """A fleet run: what the benchmark reads about the caller side."""

    calls: int
    connected: int
    completed: int  # streamed all audio and hung up, or the server ended the call
    ended_by_server: int
    errors: list[str]
    media_sent: int
    media_received: int
    marks_received: int
    marks_echoed: int
    clears: int
    protocol_errors: int
    gaps: int
    send_lateness_ms: Stats  # the ticker against its grid (caller health)
    tick_ms: Stats  # time one phase slot took to write its calls' frames
    jitter_ms: Stats  # agent media inter-arrival deviation from 20 ms
    wall_s: float


def _media_suffixes(payload: bytes) -> list[bytes]:
    """Per 20 ms frame, the media message after the sequence number, pre-encoded."""
    out: list[bytes] = []
    for k in range(0, len(payload) // FRAME_BYTES):
        frame = payload[k * FRAME_BYTES : (k + 1) * FRAME_BYTES]
        out.append(
            b'","media":{"track":"inbound","chunk":"'
            + str(k + 1).encode()
            + b'","timestamp":"'
            + str(k * 20).encode()
            + b'","payload":"'
            + base64.b64encode(frame)
            + b'"}}'
        )
    return out


class _Fleet:
    def __init__(self, config: CallerConfig, phases: int) -> None:
        self.config = config
        self.phases = phases
        # Live calls by send phase: real streams start at random moments, so
        # their 20 ms grids are spread over the period; one burst of every
        # call's frame per tick would be a load pattern Twilio never produces.
        self.live: list[list[FleetCall]] = [[] for _ in range(phases)]
        self.jitter_ms: array[float] = array("d")
        self.lateness_ms: array[float] = array("d")
        self.tick_ms: array[float] = array("d")
        self.calls: list[FleetCall] = []
        self.call_sids: dict[FleetCall, str] = {}
        self.errors: list[str] = []

    async def ticker(self, stop: asyncio.Event) -> None:
        """One grid of ``phases`` slots per 20 ms: each slot, the calls of that
        phase send their next frame (every call once per 20 ms)."""
        monotonic = time.monotonic
        step = FRAME_S / self.phases
        t0 = monotonic()
        slot = 0
        sid = self.config.account_sid
        while not stop.is_set():
            slot += 1
            target = t0 + slot * step
            delay = target - monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = monotonic()
            late = now - target
            if late > 3 * FRAME_S:
                # Stalled: restart the grid rather than burst (as the server does).
                t0, slot = now - step * (slot % self.phases), slot % self.phases
            self.lateness_ms.append(max(0.0, late) * 1000)
            group = self.live[slot % self.phases]
            finished: list[FleetCall] = []
            for call in group:
                if not call.tick():
                    finished.append(call)
            for call in finished:
                group.remove(call)
                if not call.closing:
                    call.hang_up(sid, self.call_sids[call])
            self.tick_ms.append((monotonic() - now) * 1000)

    async def start_call(
        self, index: int, session: aiohttp.ClientSession, suffixes: list[bytes]
    ) -> None:
        cfg = self.config
        base = (cfg.public_url or cfg.url).rstrip("/")
        call_sid = "CA" + secrets.token_hex(16)
        form = webhook_form(
            account_sid=cfg.account_sid, call_sid=call_sid, from_number=cfg.from_number, to=cfg.to
        )
        signature = compute_signature(cfg.auth_token, base + cfg.webhook_path, form)
        async with session.post(
            cfg.url.rstrip("/") + cfg.webhook_path,
            data=form,
            headers={"X-Twilio-Signature": signature},
            timeout=aiohttp.ClientTimeout(total=cfg.http_timeout_s),
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"webhook answered HTTP {resp.status}")
        twiml = parse_twiml(body)
        if twiml.stream_url is None:
            raise TwimlError(f"no stream in TwiML ({', '.join(twiml.verbs)})")
        # The stream URL names the public host; connect where the server listens.
        local = urlsplit(cfg.url)
        path = urlsplit(twiml.stream_url).path or "/"
        host, port = local.hostname or "127.0.0.1", local.port or 80
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {compute_signature(cfg.auth_token, twiml.stream_url, {})}\r\n"
            "\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        call = FleetCall(index, self, request, "MZ" + secrets.token_hex(16))
        self.calls.append(call)
        self.call_sids[call] = call_sid
        await loop.create_connection(lambda: call, host, port)
        async with asyncio.timeout(cfg.http_timeout_s):
            await call.handshake
        call.frames = suffixes
        call.open_stream(cfg.account_sid, call_sid, twiml.parameters)
        self.live[index % self.phases].append(call)


async def run_fleet(config: CallerConfig, *, phases: int = 10) -> FleetSummary:
    """``config.calls`` concurrent calls started over ``config.ramp_s``, each
    streaming ``config.duration_s`` of fixture audio; bounded by ``deadline_s``.

    Calls send on ``phases`` grids spread over the 20 ms period (call ``i`` on
    phase ``i % phases``); ``phases=1`` sends every call's frame in one burst."""
    if phases < 1:
        raise ValueError("phases must be at least 1")
    if config.calls < 1:
        raise ValueError("calls must be at least 1")
    library = await asyncio.to_thread(
        FixtureLibrary, Path(config.audio_dir) if config.audio_dir else default_audio_dir()
    )
    variants = [
        _media_suffixes(build_call_audio(config, i, library).payload)
        for i in range(len(config.audio))
    ]
    longest = max(len(v) for v in variants) * FRAME_S
    deadline = config.deadline_s if config.deadline_s is not None else config.ramp_s + longest + 60
    fleet = _Fleet(config, phases)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ticker = loop.create_task(fleet.ticker(stop))
    connector = aiohttp.TCPConnector(limit=0)
    connected = 0
    try:
        async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(deadline):

            async def one(i: int) -> None:
                if config.ramp_s > 0 and config.calls > 1:
                    await asyncio.sleep(
                        max(0.0, t0 + config.ramp_s * i / config.calls - loop.time())
                    )
                await fleet.start_call(i, session, variants[i % len(variants)])

            starts = await asyncio.gather(
                *(one(i) for i in range(config.calls)), return_exceptions=True
            )
            for outcome in starts:
                if isinstance(outcome, BaseException):
                    text = f"{type(outcome).__name__}: {outcome}"
                    if text not in fleet.errors and len(fleet.errors) < 20:
                        fleet.errors.append(text)
                else:
                    connected += 1
            pending = [c.done for c in fleet.calls if not c.done.done()]
            if pending:
                await asyncio.wait(pending)
    except TimeoutError:
        fleet.errors.append("run deadline reached")
    finally:
        stop.set()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        for call in fleet.calls:
            if call.transport is not None and not call.transport.is_closing():
                call.transport.abort()
    calls = fleet.calls
    for call in calls:
        if call.error and call.error not in fleet.errors and len(fleet.errors) < 20:
            fleet.errors.append(call.error)
    return FleetSummary(
        calls=config.calls,
        connected=connected,
        completed=sum(1 for c in calls if c.done.done() and c.error is None),
        ended_by_server=sum(1 for c in calls if c.frame < len(c.frames) and c.error is None),
        errors=fleet.errors,
        media_sent=sum(c.frame for c in calls),
        media_received=sum(c.media_received for c in calls),
        marks_received=sum(c.marks_received for c in calls),
        marks_echoed=sum(c.marks_echoed for c in calls),
        clears=sum(c.clears for c in calls),
        protocol_errors=sum(c.protocol_errors for c in calls),
        gaps=sum(c.gaps for c in calls),
        send_lateness_ms=make_stats(fleet.lateness_ms),
        tick_ms=make_stats(fleet.tick_ms),
        jitter_ms=make_stats(fleet.jitter_ms),
        wall_s=round(loop.time() - t0, 3),
    )
