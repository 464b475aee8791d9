"""``MediaChannel`` over a Twilio Media Streams WebSocket (transport adapter).

The WebSocket handler owns the socket: it feeds each text frame to the
``TwilioStreamState`` and passes the resulting events to ``handle``, calls
``state.poll(now)`` when ``state.next_timeout()`` passes (stall filling), and
gives this adapter two coroutines: one that sends a text frame, one that
closes the socket. Outbound audio is paced by the shared ``FrameClock``;
marks are confirmed by Twilio's echoes, and ``clear`` is sent only when audio
may still be playing.

``DirectTwilioMediaChannel`` is the same channel for a socket that can take a
text frame synchronously (the server writes WebSocket frames straight to the
transport): the clock then pumps it without a coroutine per call and frame.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock, PacedChannel
from voxgate.media.dtmf import DtmfEvent
from voxgate.media.recorder import CallRecorder
from voxgate.media.twilio_stream import (
    InboundMedia,
    MarkEcho,
    StreamEvent,
    StreamStopped,
    TwilioStreamState,
)

__all__ = ["DirectTwilioMediaChannel", "TwilioMediaChannel"]


class TwilioMediaChannel(PacedChannel):
    """One bidirectional Twilio stream as a ``MediaChannel``."""

    confirms_marks_on_write = False

    def __init__(
        self,
        call: Call,
        clock: FrameClock,
        state: TwilioStreamState,
        send_text: Callable[[str], Awaitable[None]],
        close_socket: Callable[[], Awaitable[None]],
        *,
        recorder: CallRecorder | None = None,
        inbox_limit: int = 250,
        max_outbound_frames: int = 1500,
    ) -> None:
        super().__init__(
            call, clock, inbox_limit=inbox_limit, max_outbound_frames=max_outbound_frames
        )
        self.state = state
        self._send_text = send_text
        self._close_socket = close_socket
        self.recorder = recorder

    def handle(self, events: Iterable[StreamEvent], now: float) -> None:
        """Deliver what ``TwilioStreamState.feed``/``poll`` returned."""
        recorder = self.recorder
        for event in events:
            if isinstance(event, InboundMedia):
                self.deliver_audio(event.payload, event.synthetic)
                if recorder is not None:
                    recorder.caller_ulaw(event.payload, now)
            elif isinstance(event, MarkEcho):
                self.deliver_mark_echo(event.name)
            elif isinstance(event, DtmfEvent):
                self.deliver_dtmf(event)
                self.call.record(now, "dtmf", event.digit)
            elif isinstance(event, StreamStopped):
                self.deliver_closed(EndReason.CALLER_HANGUP)

    async def _write_frame(self, ulaw: bytes) -> None:
        await self._send_text(self.state.media_message(ulaw))
        if self.recorder is not None:
            self.recorder.agent_ulaw(ulaw, time.monotonic())

    async def _write_mark(self, name: str) -> None:
        await self._send_text(self.state.mark_message(name))

    async def _write_clear(self) -> None:
        await self._send_text(self.state.clear_message())

    async def _close_transport(self, reason: EndReason) -> None:
        await self._close_socket()


class DirectTwilioMediaChannel(TwilioMediaChannel):
    """``TwilioMediaChannel`` whose media and marks go out through a synchronous
    ``send_now`` taking one UTF-8 text frame's bytes (it raises
    ``ConnectionError``/``OSError`` when the socket is gone or its peer stopped
    reading); clears and close stay coroutines."""

    writes_without_waiting = True

    def __init__(
        self,
        call: Call,
        clock: FrameClock,
        state: TwilioStreamState,
        send_text: Callable[[str], Awaitable[None]],
        close_socket: Callable[[], Awaitable[None]],
        send_now: Callable[[bytes], None],
        *,
        recorder: CallRecorder | None = None,
        inbox_limit: int = 250,
        max_outbound_frames: int = 1500,
    ) -> None:
        super().__init__(
            call,
            clock,
            state,
            send_text,
            close_socket,
            recorder=recorder,
            inbox_limit=inbox_limit,
            max_outbound_frames=max_outbound_frames,
        )
        self._send_now = send_now

    def _write_frame_now(self, ulaw: bytes) -> None:
        self._send_now(self.state.media_message_bytes(ulaw))
        if self.recorder is not None:
            self.recorder.agent_ulaw(ulaw, time.monotonic())

    def _write_mark_now(self, name: str) -> None:
        self._send_now(self.state.mark_message(name).encode())
