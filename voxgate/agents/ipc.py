"""Frames between the media core and a speech worker, and the channel that carries them.

One socketpair per worker. Each frame is a msgspec msgpack map with a ``type`` tag,
prefixed by its length as a 4-byte big-endian integer. The vocabulary is versioned by
:data:`PROTOCOL_VERSION`; the worker announces it in :class:`Hello` and the core
answers :class:`HelloAck` (or closes the socket on a mismatch).

:class:`FrameDecoder` is sans-IO (bytes in, frames out). :class:`Channel` wraps a
connected socket with bounded send/receive queues:

- real-time audio offered with :meth:`Channel.offer` is dropped (and counted) when
  the send queue is full, because stale audio is worse than a gap;
- every other frame sent with :meth:`Channel.send` waits for room and is never
  dropped; that wait is the backpressure a slow peer exerts;
- on the receiving side, :class:`AudioIn` is dropped (and counted) when the receive
  queue is full; other frames stop the reader, so the socket buffer fills and the
  sender's queue backs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change to the frame vocabulary."""

MAX_FRAME_SIZE = 4 * 1024 * 1024
"""Largest encoded frame (without its prefix) either side accepts; flow documents dominate."""

ULAW_FRAME_BYTES = 160
"""One 20 ms frame of 8 kHz µ-law; AudioOut payloads are a whole number of these."""

_PREFIX = struct.Struct(">I")


class _Frame(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every frame; the subclass name in snake_case is the tag."""


# --- handshake and health -------------------------------------------------------------


class Hello(_Frame, tag="hello"):
    """Worker -> core, first frame, sent only once the models are loaded."""

    version: int
    pid: int
    tenant_id: str | None = None
    max_calls: int = 1
    models: dict[str, str] = {}


class HelloAck(_Frame, tag="hello_ack"):
    """Core -> worker: accepts the worker; may bind it to a tenant right away."""

    version: int
    tenant_id: str | None = None


class Ping(_Frame, tag="ping"):
    seq: int
    sent_at: float = 0.0


class Pong(_Frame, tag="pong"):
    """Answer to :class:`Ping`, with the load figures the supervisor reports."""

    seq: int
    sent_at: float = 0.0
    calls: int = 0
    rss_bytes: int = 0


class EndWorker(_Frame, tag="end_worker"):
    """Core -> worker: finish (calls end) and exit."""

    reason: str = ""


# --- call lifecycle ---------------------------------------------------------------------


DEFAULT_TRANSFER_FAILED_TEXT = (
    "Sorry, I can't put you through right now. Please try again later. Goodbye."
)
"""Said when a transfer fails, before the call ends (a flow's transfer node has no way on)."""


class CallSettings(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Per-agent speech settings carried in :class:`StartCall`."""

    barge_in: bool = True
    min_silence_ms: int = 400
    stt_beam_size: int = 5
    prompt_cache_dir: str | None = None
    variables: dict[str, str] = {}
    no_input_timeout: float = 6.0
    max_utterance_s: float = 15.0
    transfer_failed_text: str = DEFAULT_TRANSFER_FAILED_TEXT


class CallSecrets(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The tenant secrets a call's side work needs, and only those.

    ``llm`` is the tenant secret ``llm`` (``base_url``, ``api_key``, ``model``);
    ``webhook`` is the tenant secret ``webhook`` (``secret``: the key that signs
    webhook bodies). The core fills them only for flows with ``llm``/``webhook``
    nodes and sends them only to the tenant's own worker. Values never appear in
    a repr, so a logged frame cannot leak them.
    """

    llm: dict[str, str] | None = None
    webhook: dict[str, str] | None = None

    def __repr__(self) -> str:
        def shown(value: dict[str, str] | None) -> str:
            return "None" if value is None else "{" + ", ".join(f"{k!r}: ***" for k in value) + "}"

        return f"CallSecrets(llm={shown(self.llm)}, webhook={shown(self.webhook)})"

    __str__ = __repr__

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [
            ("llm", None if self.llm is None else "***"),
            ("webhook", None if self.webhook is None else "***"),
        ]


class StartCall(_Frame, tag="start_call"):
    call_id: str
    tenant_id: str
    agent_id: str
    flow: dict[str, Any]
    settings: CallSettings = msgspec.field(default_factory=CallSettings)
    secrets: CallSecrets = msgspec.field(default_factory=CallSecrets)


class EndCall(_Frame, tag="end_call"):
    """Core -> worker: the call is gone (caller hung up, transfer done, drain)."""

    call_id: str
    reason: str = ""


class CallEnded(_Frame, tag="call_ended"):
    """Worker -> core: the worker has released everything it held for the call."""

    call_id: str
    reason: str = ""


# --- audio ------------------------------------------------------------------------------


class AudioIn(_Frame, tag="audio_in"):
    """Core -> worker: caller audio as received, 8 kHz µ-law (usually 160 bytes)."""

    call_id: str
    seq: int
    ulaw: bytes


class AudioOut(_Frame, tag="audio_out"):
    """Worker -> core: agent audio, 8 kHz µ-law, a whole number of 20 ms frames.

    When ``mark`` is set, the core answers with :class:`Mark` of that name once the
    last byte of this chunk has been played to the caller.
    """

    call_id: str
    seq: int
    ulaw: bytes
    mark: str | None = None

    def __post_init__(self) -> None:
        if len(self.ulaw) % ULAW_FRAME_BYTES:
            raise ValueError(f"AudioOut payload must be a multiple of {ULAW_FRAME_BYTES} bytes")


class Mark(_Frame, tag="mark"):
    """Core -> worker: the chunk carrying this mark has been played."""

    call_id: str
    name: str


class Interrupt(_Frame, tag="interrupt"):
    """Worker -> core: drop every queued AudioOut of the call now (barge-in)."""

    call_id: str


# --- speech and conversation events -------------------------------------------------------


class SpeechStarted(_Frame, tag="speech_started"):
    call_id: str
    at: float
    """Seconds since the call started (caller audio timeline)."""


class SpeechEnded(_Frame, tag="speech_ended"):
    call_id: str
    at: float


class Transcript(_Frame, tag="transcript"):
    call_id: str
    text: str
    final: bool
    start: float
    end: float
    role: Literal["caller", "agent"] = "caller"


class AgentSay(_Frame, tag="agent_say"):
    """Worker -> core: the agent starts saying ``text`` (audio follows, ending in ``mark``)."""

    call_id: str
    text: str
    node: str = ""
    mark: str | None = None


class Turn(_Frame, tag="turn"):
    """Worker -> core: one finished caller turn with its stage latencies (seconds)."""

    call_id: str
    index: int
    caller_text: str
    start: float
    end: float
    agent_text: str = ""
    heard_text: str = ""
    intent: str | None = None
    latencies: dict[str, float] = {}


class Dtmf(_Frame, tag="dtmf"):
    call_id: str
    digit: str


class Hangup(_Frame, tag="hangup"):
    """Worker -> core: end the call after queued audio has played."""

    call_id: str
    reason: str = ""


class Transfer(_Frame, tag="transfer"):
    """Worker -> core: hand the caller to ``target`` once queued audio has played.

    ``target`` is a +E.164 number or the name of one of the tenant's transfer
    targets; the core answers with :class:`TransferResult`.
    """

    call_id: str
    target: str


class TransferResult(_Frame, tag="transfer_result"):
    """Core -> worker: how a :class:`Transfer` went.

    On failure (destination refused by the dial policy, unknown target name,
    carrier refused) the call is still up and the worker runs its fallback.
    ``reason`` is a short stable code such as ``dial_refused`` or ``transfer_failed``.
    """

    call_id: str
    ok: bool
    reason: str = ""


class Metric(_Frame, tag="metric"):
    name: str
    value: float
    labels: dict[str, str] = {}


class Error(_Frame, tag="error"):
    """Either side: something failed; ``call_id`` set when it concerns one call."""

    code: str
    message: str
    call_id: str | None = None


Frame = (
    Hello
    | HelloAck
    | Ping
    | Pong
    | EndWorker
    | StartCall
    | EndCall
    | CallEnded
    | AudioIn
    | AudioOut
    | Mark
    | Interrupt
    | SpeechStarted
    | SpeechEnded
    | Transcript
    | AgentSay
    | Turn
    | Dtmf
    | Hangup
    | Transfer
    | TransferResult
    | Metric
    | Error
)


# --- errors -----------------------------------------------------------------------------


class IpcError(Exception):
    """Base of every error of the worker channel."""


class FrameError(IpcError):
    """The peer sent bytes that are not a valid frame; the stream cannot be trusted."""


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit} byte limit")
        self.size = size
        self.limit = limit


class MalformedFrame(FrameError):
    pass


class ProtocolVersionError(IpcError):
    def __init__(self, ours: int, theirs: int) -> None:
        super().__init__(f"protocol version {theirs} is not supported (this side speaks {ours})")
        self.ours = ours
        self.theirs = theirs


class ChannelClosed(IpcError):
    """The channel is closed (EOF, close() or a fatal frame error, see ``__cause__``)."""


# --- encoding ---------------------------------------------------------------------------


class FrameEncoder:
    """Encodes frames with their length prefix."""

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._max = max_frame_size

    def encode(self, frame: Frame) -> bytes:
        body = self._encoder.encode(frame)
        if len(body) > self._max:
            raise FrameTooLarge(len(body), self._max)
        return _PREFIX.pack(len(body)) + body


class FrameDecoder:
    """Sans-IO: feed bytes as they arrive, get whole frames back.

    After a :class:`FrameError` the decoder refuses further input, because a
    length-prefixed stream cannot be resynchronised.
    """

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
        self._max = max_frame_size
        self._buf = bytearray()
        self._failed: FrameError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= _PREFIX.size:
            (size,) = _PREFIX.unpack_from(self._buf)
            if size > self._max:
                self._failed = FrameTooLarge(size, self._max)
                raise self._failed
            end = _PREFIX.size + size
            if len(self._buf) < end:
                break
            body = bytes(self._buf[_PREFIX.size : end])
            del self._buf[:end]
            try:
                frames.append(self._decoder.decode(body))
            except Exception as exc:
                # msgspec raises DecodeError/ValidationError, but some corrupt strings
                # surface as UnicodeDecodeError; any failure here is the peer's fault.
                self._failed = MalformedFrame(str(exc))
                raise self._failed from exc
        return frames


def check_version(version: int) -> None:
    """Raise :class:`ProtocolVersionError` unless ``version`` is the one we speak."""
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionError(PROTOCOL_VERSION, version)


# --- channel ----------------------------------------------------------------------------


@dataclass(slots=True)
class ChannelStats:
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    audio_dropped_send: int = 0
    audio_dropped_recv: int = 0


_READ_CHUNK = 64 * 1024


class Channel:
    """Bidirectional frame channel over a connected stream socket.

    ``send_queue`` bounds frames waiting to be written; ``audio_slots`` is how much of
    it droppable audio may use, so a backlog of audio can never starve control frames.
    ``recv_queue`` bounds decoded frames not yet taken by :meth:`recv`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        send_queue: int = 512,
        audio_slots: int = 256,
        recv_queue: int = 512,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        if not 0 < audio_slots <= send_queue:
            raise ValueError("audio_slots must be in 1..send_queue")
        self._reader = reader
        self._writer = writer
        self._encoder = FrameEncoder(max_frame_size)
        self._decoder = FrameDecoder(max_frame_size)
        self._send_max = send_queue
        self._audio_slots = audio_slots
        self._outbox: deque[bytes] = deque()
        self._has_data = asyncio.Event()
        self._has_space = asyncio.Event()
        self._has_space.set()
        self._inbox: asyncio.Queue[Frame] = asyncio.Queue(recv_queue)
        self._closed = False
        self._error: BaseException | None = None
        self._eof = asyncio.Event()
        self.stats = ChannelStats()
        self._reader_task = asyncio.create_task(self._read_loop(), name="ipc-read")
        self._writer_task = asyncio.create_task(self._write_loop(), name="ipc-write")

    @classmethod
    async def open(cls, sock: socket.socket, **kwargs: Any) -> Channel:
        """Wrap a connected socket (one end of a socketpair, or an fd passed to a child)."""
        reader, writer = await asyncio.open_connection(sock=sock, limit=_READ_CHUNK * 2)
        return cls(reader, writer, **kwargs)

    @property
    def closed(self) -> bool:
        return self._closed

    # sending

    def offer(self, frame: AudioIn | AudioOut) -> bool:
        """Queue real-time audio without waiting; False (and counted) if it was dropped."""
        if self._closed:
            return False
        if len(self._outbox) >= self._audio_slots:
            self.stats.audio_dropped_send += 1
            return False
        self._outbox.append(self._encoder.encode(frame))
        self._has_data.set()
        return True

    async def send(self, frame: Frame) -> None:
        """Queue a frame, waiting while the send queue is full; never drops."""
        data = self._encoder.encode(frame)
        while not self._closed and len(self._outbox) >= self._send_max:
            self._has_space.clear()
            await self._has_space.wait()
        if self._closed:
            raise ChannelClosed("channel is closed") from self._error
        self._outbox.append(data)
        self._has_data.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._has_data.wait()
                self._has_data.clear()
                batch = list(self._outbox)
                self._outbox.clear()
                self._has_space.set()
                for data in batch:
                    self._writer.write(data)
                    self.stats.frames_sent += 1
                    self.stats.bytes_sent += len(data)
                await self._writer.drain()
                if self._closed and not self._outbox:
                    return
        except (ConnectionError, OSError) as exc:
            self._fail(exc)

    # receiving

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    break
                self.stats.bytes_received += len(data)
                for frame in self._decoder.feed(data):
                    self.stats.frames_received += 1
                    if isinstance(frame, AudioIn):
                        try:
                            self._inbox.put_nowait(frame)
                        except asyncio.QueueFull:
                            self.stats.audio_dropped_recv += 1
                    else:
                        await self._inbox.put(frame)
        except (FrameError, ConnectionError, OSError) as exc:
            self._error = exc
        finally:
            self._eof.set()
            # Wake a recv() that waits on an empty inbox.
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(_EOF_SENTINEL)

    async def recv(self) -> Frame:
        """Next frame; raises :class:`ChannelClosed` at EOF or after a fatal frame error."""
        if self._inbox.empty() and self._eof.is_set():
            raise ChannelClosed("peer closed the channel") from self._error
        frame = await self._inbox.get()
        if frame is _EOF_SENTINEL:
            raise ChannelClosed("peer closed the channel") from self._error
        return frame

    async def __aiter__(self) -> AsyncIterator[Frame]:
        while True:
            try:
                yield await self.recv()
            except ChannelClosed:
                return

    @property
    def error(self) -> BaseException | None:
        """Why the read side stopped, when it was not a clean EOF."""
        return self._error

    # closing

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._closed = True
        self._outbox.clear()
        self._has_space.set()

    async def close(self, *, flush: bool = True) -> None:
        """Stop sending (after writing what is queued when ``flush``) and close the socket."""
        if not self._closed:
            if not flush:
                self._outbox.clear()
            self._closed = True
            # Wake the writer so it flushes and exits, and any sender waiting for room.
            self._has_data.set()
            self._has_space.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer_task, timeout=5.0)
        self._writer_task.cancel()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader_task
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


# A private frame instance that marks end of stream in the inbox; never sent.
_EOF_SENTINEL: Frame = Error(code="eof", message="end of stream")
