"""asyncio sockets for RTP: one port pair per call, one 20 ms tick for all calls.

:class:`RtpEndpoint` binds the even RTP port and the odd RTCP port handed out
by :class:`~voxgate.sip.ports.RtpPortAllocator` (moving on to the next pair
when another process holds one), feeds what arrives to the call's sans-IO
:class:`~voxgate.sip.rtp_session.RtpSession` and sends the datagrams it
produces.  :class:`RtpClock` is the process-wide 20 ms tick that pulls each
call's playout frame from its jitter buffer and runs its RTCP/DTMF/inactivity
timers: one wake-up per tick for every call, like the media
:class:`~voxgate.media.channel.FrameClock` for outbound audio.

Times given to the sessions come from ``time.monotonic`` (the uvloop loop
clock is millisecond-coarse, too coarse for jitter statistics).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
from collections.abc import Callable
from typing import Protocol, cast

from voxgate.media.channel import FrameClock
from voxgate.media.pacer import Pacer
from voxgate.sip.ports import RtpPortAllocator
from voxgate.sip.rtp_session import Datagram, RtpEvent, RtpSession

__all__ = ["RtpBindError", "RtpClock", "RtpEndpoint", "Tickable"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
EventSink = Callable[[list[RtpEvent]], None]


class RtpBindError(OSError):
    """No RTP port pair of the range could be bound."""


class _RtpSocket(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint, rtcp: bool) -> None:
        self._endpoint = endpoint
        self._rtcp = rtcp
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        # An AF_INET/AF_INET6 socket always reports (host str, port int, ...):
        # no per-packet conversion, only the IPv6 tail is cut off.
        self._endpoint._received(
            data, cast(Address, addr if len(addr) == 2 else addr[:2]), self._rtcp
        )

    def error_received(self, exc: Exception) -> None:
        # ICMP unreachable while the remote is not listening yet: not fatal.
        self._endpoint.send_errors += 1


def _same(protocol: _RtpSocket) -> _RtpSocket:
    return protocol


class RtpEndpoint:
    """The RTP and RTCP sockets of one call."""

    def __init__(self, port: int, allocator: RtpPortAllocator | None) -> None:
        self.port = port
        self._rtp: _RtpSocket | None = None
        self._rtcp: _RtpSocket | None = None
        self._allocator = allocator
        self.session: RtpSession | None = None
        self._on_events: EventSink | None = None
        self.send_errors = 0
        self.closed = False

    @classmethod
    async def open(
        cls, allocator: RtpPortAllocator, host: str, *, attempts: int = 16
    ) -> RtpEndpoint:
        """Bind the next free port pair; raises :class:`PortsExhausted` or :class:`RtpBindError`."""
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(max(1, min(attempts, allocator.capacity))):
            port = allocator.allocate()
            rtp_t: asyncio.BaseTransport | None = None
            endpoint = cls(port, allocator)
            rtp_p = _RtpSocket(endpoint, False)
            rtcp_p = _RtpSocket(endpoint, True)
            try:
                rtp_t, _ = await loop.create_datagram_endpoint(
                    functools.partial(_same, rtp_p), local_addr=(host, port)
                )
                await loop.create_datagram_endpoint(
                    functools.partial(_same, rtcp_p), local_addr=(host, port + 1)
                )
            except OSError as exc:
                if rtp_t is not None:
                    rtp_t.close()
                allocator.release(port)
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise RtpBindError(exc.errno, f"RTP {host}:{port}: {exc.strerror}") from None
                last = exc
                continue
            endpoint._rtp = rtp_p
            endpoint._rtcp = rtcp_p
            return endpoint
        raise RtpBindError(
            errno.EADDRINUSE, f"no bindable RTP port pair on {host}: {last}"
        ) from None

    def attach(self, session: RtpSession, on_events: EventSink) -> None:
        """Start feeding received packets to ``session``; its events go to ``on_events``."""
        self.session = session
        self._on_events = on_events

    def _received(self, data: bytes, addr: Address, rtcp: bool) -> None:
        session = self.session
        if session is None or self.closed:
            return
        now = time.monotonic()
        events = session.receive_rtcp(data, addr, now) if rtcp else session.receive(data, addr, now)
        if events and self._on_events is not None:
            self._on_events(events)

    def send(self, datagram: Datagram) -> None:
        """Send one datagram from the RTP (or RTCP) socket."""
        sock = self._rtcp if datagram.rtcp else self._rtp
        if self.closed or sock is None or sock.transport is None:
            return
        sock.transport.sendto(datagram.data, datagram.addr)

    def close(self) -> None:
        """Close both sockets and return the port pair."""
        if self.closed:
            return
        self.closed = True
        for sock in (self._rtp, self._rtcp):
            if sock is not None and sock.transport is not None:
                sock.transport.close()
        if self._allocator is not None:
            self._allocator.release(self.port)


class Tickable(Protocol):
    """Something the :class:`RtpClock` visits every 20 ms."""

    def tick(self, now: float) -> None: ...


def _rephase(pacer: Pacer, other: Pacer, now: float) -> None:
    """Move ``pacer``'s grid half an interval after ``other``'s (if it drifted)."""
    interval = pacer.interval
    target = other.next_deadline() + interval / 2
    offset = (pacer.next_deadline() - target) % interval
    if min(offset, interval - offset) <= interval / 10:
        return
    while target < now:
        target += interval
    while target - interval > now:
        target -= interval
    pacer.restart(target)


class RtpClock:
    """One 20 ms tick for the inbound side of every RTP call in the process."""

    def __init__(self, interval: float = 0.020, *, resync_after: float = 0.060) -> None:
        self._interval = interval
        self._resync_after = resync_after
        self._members: dict[Tickable, None] = {}
        self._wake: asyncio.Event | None = None
        self._apart_from: FrameClock | None = None
        self.pacer: Pacer | None = None
        self.ticks = 0

    def keep_apart_from(self, clock: FrameClock) -> None:
        """Tick half an interval away from ``clock``'s ticks.

        Both clocks visit every live call every 20 ms; in phase, the
        outbound tick would start only after the inbound one has run (and
        the other way round), which a caller hears as pacing lateness.
        """
        self._apart_from = clock

    def add(self, member: Tickable) -> None:
        """Visit ``member`` from the next tick on."""
        self._members[member] = None
        if self._wake is not None:
            self._wake.set()

    def remove(self, member: Tickable) -> None:
        """Stop visiting ``member``."""
        self._members.pop(member, None)

    def __len__(self) -> int:
        return len(self._members)

    def tick(self, now: float) -> None:
        """One tick's work (what tests drive with a fake clock)."""
        self.ticks += 1
        for member in list(self._members):
            try:
                member.tick(now)
            except Exception:
                # One broken call must not stop every other call's audio.
                log.exception("RTP tick failed; dropping the call from the clock")
                self._members.pop(member, None)

    async def run(self) -> None:
        """Tick forever (cancel to stop); sleeps while no call is live."""
        self._wake = asyncio.Event()
        pacer = Pacer(time.monotonic(), self._interval, resync_after=self._resync_after)
        self.pacer = pacer
        while True:
            if not self._members:
                self._wake.clear()
                await self._wake.wait()
                pacer.restart(time.monotonic())
            other = self._apart_from.pacer if self._apart_from is not None else None
            if other is not None:
                _rephase(pacer, other, time.monotonic())
            delay = pacer.next_deadline() - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            due = pacer.poll(now)
            for _ in range(due):
                self.tick(now)
