"""A tiny SIP-over-UDP user agent client, written from RFC 3261/3581/4566 for the
contract tests: OPTIONS, INVITE/ACK/BYE with an SDP offer, and an RTP socket."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import struct
from dataclasses import dataclass, field

_ids = itertools.count(1)


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_response(data: bytes) -> SipResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    version, code, reason = [*lines[0].split(" ", 2), ""][:3]
    assert version == "SIP/2.0", lines[0]
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
               "l": "content-length", "c": "content-type"}  # fmt: skip
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip()
        headers.append((compact.get(name.lower(), name), value.strip()))
    return SipResponse(int(code), reason, headers, body)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    to_header: str
    remote_target: str
    cseq: int
    answer: SipResponse


@dataclass
class SipClient:
    """One UDP socket talking to ``server`` (host, port)."""

    server: tuple[str, int]
    transport: asyncio.DatagramTransport | None = None
    protocol: _Protocol = field(default_factory=_Protocol)

    @classmethod
    async def open(cls, server: tuple[str, int]) -> SipClient:
        client = cls(server)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: client.protocol, local_addr=("127.0.0.1", 0)
        )
        client.transport = transport
        return client

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send(self, text: str, body: bytes = b"") -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode() + body, self.server)

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str,
        cseq: int,
        from_tag: str,
        to: str,
        branch: str | None = None,
        body: bytes = b"",
        extra: tuple[str, ...] = (),
    ) -> str:
        branch = branch or f"z9hG4bK{os.urandom(6).hex()}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:tester@127.0.0.1>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method.split()[0]}",
            f"Contact: <sip:tester@127.0.0.1:{self.port}>",
            "User-Agent: contract-test",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self._send("\r\n".join(lines) + "\r\n\r\n", body)
        return branch

    async def response(self, call_id: str, within: float = 5.0) -> SipResponse:
        """The next response of ``call_id`` (requests from the server are ignored)."""
        async with asyncio.timeout(within):
            while True:
                data = await self.protocol.queue.get()
                if not data.startswith(b"SIP/2.0 "):
                    continue
                answer = parse_response(data)
                if answer.header("call-id") == call_id:
                    return answer

    async def final(self, call_id: str, within: float = 10.0) -> SipResponse:
        async with asyncio.timeout(within):
            while (answer := await self.response(call_id, within)).status < 200:
                pass
        return answer

    async def options(self, uri: str) -> SipResponse:
        call_id = f"opt-{next(_ids)}-{os.urandom(4).hex()}"
        self.request("OPTIONS", uri, call_id=call_id, cseq=1, from_tag="o1", to=f"<{uri}>")
        return await self.final(call_id)

    async def invite(self, uri: str, sdp: bytes) -> Dialog | SipResponse:
        """INVITE; a 2xx is ACKed and returns a Dialog, any other final response is
        ACKed (same transaction) and returned."""
        call_id = f"inv-{next(_ids)}-{os.urandom(4).hex()}"
        from_tag = os.urandom(4).hex()
        to = f"<{uri}>"
        branch = self.request(
            "INVITE", uri, call_id=call_id, cseq=1, from_tag=from_tag, to=to, body=sdp
        )
        answer = await self.final(call_id)
        to_header = answer.header("to") or to
        if answer.status >= 300:
            self.request(
                "ACK", uri, call_id=call_id, cseq=1, from_tag=from_tag, to=to_header, branch=branch
            )
            return answer
        contact = answer.header("contact") or f"<{uri}>"
        target = re.search(r"<([^>]+)>", contact)
        remote = target.group(1) if target else contact
        self.request("ACK", remote, call_id=call_id, cseq=1, from_tag=from_tag, to=to_header)
        return Dialog(call_id, from_tag, to_header, remote, 1, answer)

    async def bye(self, dialog: Dialog) -> SipResponse:
        dialog.cseq += 1
        self.request(
            "BYE", dialog.remote_target, call_id=dialog.call_id, cseq=dialog.cseq,
            from_tag=dialog.from_tag, to=dialog.to_header,
        )  # fmt: skip
        return await self.final(dialog.call_id)


def offer(rtp_port: int, payloads: tuple[int, ...] = (0, 8, 101)) -> bytes:
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}
    lines = [
        "v=0",
        f"o=tester {rtp_port} 1 IN IP4 127.0.0.1",
        "s=contract",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {' '.join(str(p) for p in payloads)}",
        *(f"a=rtpmap:{p} {names[p]}" for p in payloads),
        *(["a=fmtp:101 0-16"] if 101 in payloads else []),
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class SdpAnswer:
    host: str
    port: int
    payloads: list[int]
    rtpmap: dict[int, str]


def parse_sdp(body: bytes) -> SdpAnswer:
    host, port, payloads, rtpmap = "", 0, [], {}
    for line in body.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[-1]
        elif line.startswith("m=audio "):
            parts = line.split()
            port = int(parts[1])
            payloads = [int(p) for p in parts[3:]]
        elif line.startswith("a=rtpmap:"):
            number, _, name = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[int(number)] = name
    return SdpAnswer(host, port, payloads, rtpmap)


class Rtp:
    """An RTP socket sending 20 ms packets of one payload type."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _Protocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self.seq = 0
        self.ssrc = int.from_bytes(os.urandom(4), "big")

    @classmethod
    async def open(cls) -> Rtp:
        protocol = _Protocol()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: protocol, local_addr=("127.0.0.1", 0)
        )
        return cls(transport, protocol)

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, to: tuple[str, int], payload: bytes, payload_type: int = 0) -> None:
        header = struct.pack(
            "!BBHII", 0x80, payload_type & 0x7F, self.seq & 0xFFFF, self.seq * 160, self.ssrc
        )
        self.seq += 1
        self.transport.sendto(header + payload, to)

    async def receive(self, within: float = 10.0) -> tuple[int, bytes]:
        """(payload type, payload) of the next RTP packet."""
        async with asyncio.timeout(within):
            data = await self.protocol.queue.get()
        return data[1] & 0x7F, data[12:]

    def close(self) -> None:
        self.transport.close()
