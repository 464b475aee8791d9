"""SIP transports on real loopback sockets: UDP, TCP framing, keep-alive, connection reuse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voxgate.sip.transaction import Address, Outgoing, Transport
from voxgate.sip.transport import SipTransportError, SipTransports

OPTIONS = (
    b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKabc\r\n"
    b"From: <sip:b@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"Content-Length: 4\r\n\r\nbody"
)


class Collector:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address, Transport]] = asyncio.Queue()

    def __call__(self, data: bytes, source: Address, transport: Transport) -> None:
        self.queue.put_nowait((data, source, transport))

    async def get(self) -> tuple[bytes, Address, Transport]:
        async with asyncio.timeout(5):
            return await self.queue.get()


@pytest.fixture
async def server() -> AsyncIterator[tuple[SipTransports, Collector]]:
    sink = Collector()
    transports = SipTransports(sink)
    await transports.listen_udp("127.0.0.1", 0)
    await transports.listen_tcp("127.0.0.1", 0)
    yield transports, sink
    await transports.close()


async def test_udp_roundtrip(server: tuple[SipTransports, Collector]) -> None:
    transports, sink = server
    address = transports.local_address(Transport.UDP)
    assert address is not None and address[1] != 0
    client_sink = Collector()
    client = SipTransports(client_sink)
    client_addr = await client.listen_udp("127.0.0.1", 0)
    try:
        client.send_outgoing([Outgoing(b"hello", address, Transport.UDP)])
        data, source, kind = await sink.get()
        assert (data, source, kind) == (b"hello", client_addr, Transport.UDP)
        transports.send(b"back", source, Transport.UDP)
        assert (await client_sink.get())[0] == b"back"
    finally:
        await client.close()


async def test_tcp_framing_split_and_coalesced(server: tuple[SipTransports, Collector]) -> None:
    transports, sink = server
    address = transports.local_address(Transport.TCP)
    assert address is not None
    reader, writer = await asyncio.open_connection(*address)
    # One message split in three writes, then two messages in one write.
    for part in (OPTIONS[:10], OPTIONS[10:70], OPTIONS[70:]):
        writer.write(part)
        await writer.drain()
    writer.write(OPTIONS + OPTIONS)
    await writer.drain()
    for _ in range(3):
        data, source, kind = await sink.get()
        assert data == OPTIONS
        assert kind is Transport.TCP
    # RFC 5626 keep-alive: a double CRLF ping gets a single CRLF pong.
    writer.write(b"\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"
    # Responses to the connection's peer address go back on the same connection.
    transports.send(b"SIP/2.0 200 OK\r\n\r\n", source, Transport.TCP)
    async with asyncio.timeout(5):
        assert await reader.readexactly(18) == b"SIP/2.0 200 OK\r\n\r\n"
    writer.close()


async def test_tcp_bad_framing_closes_connection(server: tuple[SipTransports, Collector]) -> None:
    transports, _ = server
    address = transports.local_address(Transport.TCP)
    assert address is not None
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nxx")
    await writer.drain()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by the server
    writer.close()


async def test_tcp_client_reuses_one_connection(server: tuple[SipTransports, Collector]) -> None:
    transports, sink = server
    address = transports.local_address(Transport.TCP)
    assert address is not None
    client = SipTransports(Collector())
    try:
        client.send(OPTIONS, address, Transport.TCP)  # queued while connecting
        client.send(OPTIONS, address, Transport.TCP)
        first = await sink.get()
        second = await sink.get()
        assert first[1] == second[1]  # same source port: one connection
        client.send(OPTIONS, address, Transport.TCP)
        assert (await sink.get())[1] == first[1]
        assert client.connections == 1
    finally:
        await client.close()


async def test_tcp_connect_failure_is_reported() -> None:
    failures: list[tuple[Address, Transport]] = []
    done = asyncio.Event()

    def failed(address: Address, transport: Transport) -> None:
        failures.append((address, transport))
        done.set()

    # A port with nothing listening: bind then close a socket to find one.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = SipTransports(Collector(), on_failure=failed)
    try:
        client.send(OPTIONS, ("127.0.0.1", port), Transport.TCP)
        async with asyncio.timeout(5):
            await done.wait()
        assert failures == [(("127.0.0.1", port), Transport.TCP)]
    finally:
        await client.close()


async def test_sink_errors_do_not_break_the_socket(server: tuple[SipTransports, Collector]) -> None:
    transports, sink = server
    calls = 0

    def broken(data: bytes, source: Address, transport: Transport) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        sink(data, source, transport)

    transports.sink = broken
    address = transports.local_address(Transport.UDP)
    assert address is not None
    client = SipTransports(Collector())
    await client.listen_udp("127.0.0.1", 0)
    try:
        client.send(b"one", address, Transport.UDP)
        client.send(b"two", address, Transport.UDP)
        assert (await sink.get())[0] == b"two"
    finally:
        await client.close()


async def test_port_in_use_is_a_typed_error(server: tuple[SipTransports, Collector]) -> None:
    transports, _ = server
    address = transports.local_address(Transport.UDP)
    assert address is not None
    other = SipTransports()
    with pytest.raises(SipTransportError):
        await other.listen_udp("127.0.0.1", address[1])
    await other.close()
