"""``MediaChannel`` over SIP + RTP: what an agent sees of a SIP call.

:class:`SipMediaChannel` is a :class:`~voxgate.media.channel.PacedChannel`
(outbound audio paced by the shared ``FrameClock``, marks reached as soon as
their audio is written, since RTP plays what it gets) on top of one call's
:class:`~voxgate.sip.rtp_session.RtpSession` and
:class:`~voxgate.sip.rtp_transport.RtpEndpoint`.  It is also the SIP
session's :class:`~voxgate.sip.ua.SessionListener`:

* every :class:`~voxgate.sip.rtp_transport.RtpClock` tick pulls one 20 ms
  frame from the jitter buffer for the agent (once the caller's RTP has
  started) and runs RTCP/DTMF timers;
* RFC 4733 events and SIP INFO key presses arrive as DTMF events;
  :meth:`send_dtmf` sends RFC 4733 digits;
* re-INVITE offers (hold/unhold, new address) are answered from the call's
  ``SdpSession`` and applied to the RTP session;
* the agent's ``hangup()`` sends BYE; the caller's BYE closes the channel;
  no RTP for ``inactivity_timeout`` seconds ends the call (BYE, reason
  ``timeout``);
* when the call ends the RTP/RTCP statistics are handed to ``on_finished``
  (the gateway saves them on the call record) and the port pair is released.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from voxgate.media.call import Call, EndReason
from voxgate.media.channel import FrameClock, PacedChannel
from voxgate.media.dtmf import DtmfEvent, DtmfSource
from voxgate.sip.rtcp import RtcpStats
from voxgate.sip.rtp_session import DtmfReceived, MediaTimeout, RtpEvent, RtpSession
from voxgate.sip.rtp_transport import RtpClock, RtpEndpoint
from voxgate.sip.sdp import SdpSession, SessionDescription
from voxgate.sip.ua import Session, SessionEnd

__all__ = ["SipMediaChannel"]

log = logging.getLogger(__name__)

_SESSION_END_REASONS = {
    SessionEnd.REMOTE_BYE: EndReason.CALLER_HANGUP,
    SessionEnd.LOCAL_BYE: EndReason.AGENT_HANGUP,
    SessionEnd.NO_ACK: EndReason.FAILED,
    SessionEnd.FAILED: EndReason.ERROR,
    SessionEnd.SHUTDOWN: EndReason.DRAIN,
}


class SipMediaChannel(PacedChannel):
    """One SIP call's audio as a ``MediaChannel`` (see the module docstring)."""

    confirms_marks_on_write = True
    writes_without_waiting = True  # a UDP sendto never waits

    def __init__(
        self,
        call: Call,
        clock: FrameClock,
        rtp_clock: RtpClock,
        endpoint: RtpEndpoint,
        rtp: RtpSession,
        sdp: SdpSession,
        *,
        on_finished: Callable[[SipMediaChannel], None] | None = None,
        inbox_limit: int = 250,
        max_outbound_frames: int = 1500,
    ) -> None:
        super().__init__(
            call, clock, inbox_limit=inbox_limit, max_outbound_frames=max_outbound_frames
        )
        self.endpoint = endpoint
        self.rtp = rtp
        self.sdp = sdp
        self.session: Session | None = None
        self._rtp_clock = rtp_clock
        self._on_finished = on_finished
        self._next_timer = rtp.next_timeout() or 0.0
        self._finished = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: RtcpStats | None = None
        endpoint.attach(rtp, self._on_rtp_events)

    # -- wiring --------------------------------------------------------------
    def start(self, session: Session) -> None:
        """Bind to the answered SIP session and start pulling inbound audio."""
        self.session = session
        self._rtp_clock.keep_apart_from(self._clock)
        self._rtp_clock.add(self)

    # -- RTP side ------------------------------------------------------------
    def tick(self, now: float) -> None:
        """One 20 ms tick: the caller's next frame for the agent, then due timers."""
        if self.closed:
            return
        rtp = self.rtp
        if rtp.latched:
            # Until the caller's first RTP packet there is no caller audio to
            # play out; manufacturing silence for every such call (signalling
            # only, or media not yet flowing) would cost the same as live audio.
            self.deliver_audio(rtp.next_frame(now))
        if now >= self._next_timer:
            for datagram in rtp.datagrams_to_send(now):
                self.endpoint.send(datagram)
            events = rtp.handle_timer(now)
            if events:
                self._on_rtp_events(events)
            self._next_timer = rtp.next_timeout() or now + 1.0

    def _on_rtp_events(self, events: list[RtpEvent]) -> None:
        for event in events:
            if isinstance(event, DtmfReceived):
                e = event.event
                if e.digit in "0123456789*#ABCD" and len(e.digit) == 1:
                    self.deliver_dtmf(DtmfEvent(e.digit, e.duration_ms / 1000, DtmfSource.RFC4733))
                    self.call.record(time.time(), "dtmf", e.digit)
            elif isinstance(event, MediaTimeout):
                self.call.record(time.time(), "rtp_timeout", f"{event.idle:.1f}")
                self._spawn(self.hangup(EndReason.TIMEOUT))
        # A DTMF digit may have moved the timers earlier.
        self._next_timer = min(self._next_timer, self.rtp.next_timeout() or self._next_timer)

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits (raises if telephone-event was not negotiated)."""
        self.rtp.send_dtmf(digits, time.monotonic())
        self._next_timer = time.monotonic()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- PacedChannel hooks -------------------------------------------------
    async def _write_frame(self, ulaw: bytes) -> None:
        self._write_frame_now(ulaw)

    def _write_frame_now(self, ulaw: bytes) -> None:
        datagram = self.rtp.send_audio(ulaw, time.monotonic())
        if datagram is not None:
            self.endpoint.send(datagram)

    async def _write_mark(self, name: str) -> None:
        return None  # RTP has no marks: reached when written

    def _write_mark_now(self, name: str) -> None:
        return None

    async def _write_clear(self) -> None:
        return None  # nothing is buffered beyond our own queue

    async def _close_transport(self, reason: EndReason) -> None:
        session = self.session
        self._finish()
        if session is not None and not session.is_ended:
            try:
                async with asyncio.timeout(5):
                    await session.hangup()
            except TimeoutError:
                pass

    # -- SessionListener ------------------------------------------------------
    def session_confirmed(self, session: Session) -> None:
        self.call.record(time.time(), "sip_confirmed")

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        answer, params = self.sdp.answer(offer)
        self.rtp.update_media(params, time.monotonic())
        self.call.record(time.time(), "sip_reoffer", params.direction.value)
        return answer.to_bytes()

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        self.deliver_dtmf(DtmfEvent(digit, duration, DtmfSource.SIP_INFO))
        self.call.record(time.time(), "dtmf", digit)

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        self._finish()
        self.deliver_closed(_SESSION_END_REASONS[reason])

    # -- teardown ---------------------------------------------------------------
    def _finish(self) -> None:
        """Stop RTP, keep the statistics, release the ports (once)."""
        if self._finished:
            return
        self._finished = True
        self._rtp_clock.remove(self)
        now = time.monotonic()
        bye = self.rtp.bye(now, "call ended")
        if bye is not None:
            self.endpoint.send(bye)
        self.stats = self.rtp.stats()
        self.endpoint.close()
        if self._on_finished is not None:
            try:
                self._on_finished(self)
            except Exception:
                log.exception("call %s: finishing hook failed", self.call.call_id)

    def abort(self, reason: EndReason) -> None:
        """End without signalling (the SIP side already failed)."""
        self._finish()
        self.deliver_closed(reason)
