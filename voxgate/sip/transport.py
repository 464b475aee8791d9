"""SIP over asyncio sockets: UDP, TCP with Content-Length framing, and the TLS seam.

These are the thin I/O wrappers around the sans-IO core: every received
datagram or stream frame goes to one *sink* callable ``sink(data, source,
transport)`` (the user agent, which feeds its transaction layer), and
:meth:`SipTransports.send` takes the layer's :class:`Outgoing` items.  Nothing
here parses beyond framing, and nothing blocks the loop: sends are
``sendto``/``write`` calls, TCP connects run as tasks with the bytes queued
meanwhile.

Connection reuse (RFC 3261 §18): a TCP connection is kept per remote
address, whether we opened it or the peer did, and both requests and
responses to that address travel on it.  Responses to a request that came
over TCP go back on the same connection (the transaction layer addresses
them to the request's source, which is the connection's peer address).

TLS is a seam, not a feature yet: pass an ``ssl.SSLContext`` to
:meth:`SipTransports.listen_tls` / the constructor's ``tls_client`` and the
same stream code runs over it as ``Transport.TLS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import cast

from voxgate.sip.errors import SipParseError
from voxgate.sip.message import DEFAULT_LIMITS, SipLimits, StreamFramer
from voxgate.sip.transaction import Address, Outgoing, Transport

__all__ = ["MessageSink", "SipTransportError", "SipTransports"]

log = logging.getLogger(__name__)

# Receives each datagram / stream frame: (bytes, source address, transport).
MessageSink = Callable[[bytes, Address, Transport], None]
# Told when a destination cannot be reached (TCP connect/write failed).
FailureSink = Callable[[Address, Transport], None]


class SipTransportError(OSError):
    """A listener could not be started (bad address, port in use)."""


def _address(raw: tuple[object, ...]) -> Address:
    # IPv6 sockaddrs carry flowinfo and scope id; the SIP layer keys on (host, port).
    return str(raw[0]), int(raw[1])  # type: ignore[call-overload]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self._owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's UDP transport subclasses DatagramTransport (it is
        # duck-typed), so no isinstance check here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._owner._deliver(data, _address(addr), Transport.UDP)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: UDP has no per-send failure to
        # report, and the transaction timers already cover lost messages.
        log.debug("SIP UDP socket error: %s", exc)


class _Stream(asyncio.Protocol):
    """One TCP/TLS connection: frames bytes into messages, answers keep-alive pings."""

    def __init__(self, owner: SipTransports, kind: Transport) -> None:
        self._owner = owner
        self._kind = kind
        self._framer = StreamFramer(owner.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = _address(tuple(peer)) if peer else None
        if self.peer is not None:
            self._owner._register(self.peer, self._kind, self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except SipParseError as exc:
            # Framing is lost for good on a stream: drop the connection.
            log.info("closing SIP %s connection from %s: %s", self._kind.value, self.peer, exc)
            self.close()
            return
        for frame in frames:
            if frame is StreamFramer.PING or frame == StreamFramer.PING:
                self.write(b"\r\n")
            elif self.peer is not None:
                self._owner._deliver(frame, self.peer, self._kind)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self._owner._unregister(self.peer, self._kind, self)
        if not self.closed.done():
            self.closed.set_result(None)


class _Connecting:
    """An outbound connection being opened; bytes sent meanwhile wait here."""

    __slots__ = ("pending", "task")

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.task: asyncio.Task[None] | None = None


class SipTransports:
    """The SIP sockets of one server: a UDP socket and TCP (optionally TLS) listeners."""

    def __init__(
        self,
        sink: MessageSink | None = None,
        *,
        limits: SipLimits = DEFAULT_LIMITS,
        on_failure: FailureSink | None = None,
        tls_client: ssl.SSLContext | None = None,
        max_connections: int = 4096,
        connect_timeout: float = 5.0,
        max_pending_bytes: int = 256 * 1024,
    ) -> None:
        self.sink: MessageSink | None = sink
        self.on_failure = on_failure
        self.limits = limits
        self._tls_client = tls_client
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._max_pending = max_pending_bytes
        self._udp: _Datagrams | None = None
        self._servers: dict[Transport, asyncio.Server] = {}
        self._addresses: dict[Transport, Address] = {}
        self._streams: dict[tuple[Transport, Address], _Stream] = {}
        self._connecting: dict[tuple[Transport, Address], _Connecting] = {}
        self.dropped_sends = 0

    # ------------------------------------------------------------------ listening

    async def listen_udp(self, host: str, port: int) -> Address:
        """Bind the UDP socket (port 0 = any free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(host, port)
            )
        except OSError as exc:
            raise SipTransportError(exc.errno, f"SIP UDP {host}:{port}: {exc.strerror}") from None
        self._udp = protocol
        assert protocol.transport is not None  # set by connection_made
        bound = _address(tuple(protocol.transport.get_extra_info("sockname")))
        self._addresses[Transport.UDP] = bound
        return bound

    async def listen_tcp(self, host: str, port: int) -> Address:
        """Start the TCP listener; returns the bound address."""
        return await self._listen(Transport.TCP, host, port, None)

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> Address:
        """Start a TLS listener (the seam for SIPS; same framing as TCP)."""
        return await self._listen(Transport.TLS, host, port, context)

    async def _listen(
        self, kind: Transport, host: str, port: int, context: ssl.SSLContext | None
    ) -> Address:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: self._accept(kind), host, port, ssl=context, reuse_address=True
            )
        except OSError as exc:
            raise SipTransportError(
                exc.errno, f"SIP {kind.value} {host}:{port}: {exc.strerror}"
            ) from None
        self._servers[kind] = server
        bound = _address(tuple(server.sockets[0].getsockname()))
        self._addresses[kind] = bound
        return bound

    def _accept(self, kind: Transport) -> asyncio.Protocol:
        stream = _Stream(self, kind)
        if len(self._streams) >= self._max_connections:
            # Over the limit: accept and close at once rather than grow without bound.
            asyncio.get_running_loop().call_soon(stream.close)
        return stream

    def local_address(self, transport: Transport) -> Address | None:
        """Where we listen for ``transport`` (for Via and Contact)."""
        return self._addresses.get(transport)

    @property
    def connections(self) -> int:
        """Open stream connections (both directions)."""
        return len(self._streams)

    # ------------------------------------------------------------------ sending

    def send_outgoing(self, items: list[Outgoing]) -> None:
        """Send what the transaction layer produced."""
        for item in items:
            self.send(item.data, item.destination, item.transport)

    def send(self, data: bytes, destination: Address, transport: Transport) -> None:
        """Send one message; never blocks.  TCP/TLS reuse or open a connection."""
        if transport is Transport.UDP:
            udp = self._udp
            if udp is None or udp.transport is None:
                self.dropped_sends += 1
                return
            udp.transport.sendto(data, destination)
            return
        key = (transport, destination)
        stream = self._streams.get(key)
        if stream is not None:
            stream.write(data)
            return
        connecting = self._connecting.get(key)
        if connecting is None:
            connecting = _Connecting()
            self._connecting[key] = connecting
            connecting.task = asyncio.get_running_loop().create_task(
                self._connect(transport, destination, connecting)
            )
        if sum(map(len, connecting.pending)) + len(data) > self._max_pending:
            self.dropped_sends += 1
            return
        connecting.pending.append(data)

    async def _connect(self, kind: Transport, destination: Address, state: _Connecting) -> None:
        loop = asyncio.get_running_loop()
        context = self._tls_client if kind is Transport.TLS else None
        try:
            if kind is Transport.TLS and context is None:
                raise OSError("no TLS client context configured")
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Stream(self, kind), destination[0], destination[1], ssl=context
                )
        except (OSError, TimeoutError) as exc:
            log.info("SIP %s connect to %s failed: %s", kind.value, destination, exc)
            self._connecting.pop((kind, destination), None)
            if self.on_failure is not None:
                self.on_failure(destination, kind)
            return
        self._connecting.pop((kind, destination), None)
        # The connection registers itself under its peer address; also keep
        # it under the address we dialled, in case the two spell it differently.
        self._streams.setdefault((kind, destination), protocol)
        for data in state.pending:
            protocol.write(data)

    # ------------------------------------------------------------------ plumbing

    def _deliver(self, data: bytes, source: Address, transport: Transport) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            sink(data, source, transport)
        except Exception:
            # A bug in message handling must never take the socket down.
            log.exception("SIP message from %s could not be handled", source)

    def _register(self, peer: Address, kind: Transport, stream: _Stream) -> None:
        self._streams[(kind, peer)] = stream

    def _unregister(self, peer: Address, kind: Transport, stream: _Stream) -> None:
        for key, value in list(self._streams.items()):
            if value is stream:
                del self._streams[key]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for state in list(self._connecting.values()):
            if state.task is not None:
                state.task.cancel()
        self._connecting.clear()
        for server in self._servers.values():
            server.close()
        streams = list({id(s): s for s in self._streams.values()}.values())
        for stream in streams:
            stream.close()
        for stream in streams:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(stream.closed), 1.0)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None
