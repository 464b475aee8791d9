"""sipp as a real SIP peer against a running voxgate server (loopback, free ports).

Calls the echo agent playing a recorded utterance (checks our echoed RTP left
for sipp's media port and the call record), CANCEL -> 487, OPTIONS -> 200,
the same call with sipp dropping 10 % of its messages (retransmissions), and
the RFC 4475 torture messages sent live while the server keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.sip_env import ECHO_NUMBER, SCENARIOS, TESTDATA, SipEnv, sip_server
from voxgate.sip.message import SipResponse, parse
from voxgate.tenants.calls import CallRecords

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _sipp(env: SipEnv, scenario: str, *extra: str, limit: float = 40) -> tuple[int, str]:
    args = [
        "sipp", f"127.0.0.1:{env.sip_port}", "-sf", str(SCENARIOS / scenario), "-s", ECHO_NUMBER,
        "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-mi", "127.0.0.1",
        "-mp", str(_free_udp_port()), "-m", "1", "-timeout", "30", "-timeout_error", "-nostdin",
        *extra,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(limit):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")[-3000:]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SipEnv]:
    # Ring briefly so sipp's CANCEL (sent right after 180) finds the INVITE unanswered.
    async with sip_server(tmp_path, ring_seconds=0.3) as env:
        yield env


async def _only_record(env: SipEnv) -> tuple[str, list[str]]:
    page = await CallRecords(env.services.store).list(env.tenant_id)
    assert len(page.calls) == 1
    detail = await CallRecords(env.services.store).detail(env.tenant_id, page.calls[0].id)
    return detail.call.status, [f"{e.kind}:{e.detail}" for e in detail.events]


async def test_sipp_call_echo_media_and_bye(env: SipEnv) -> None:
    code, out = await _sipp(env, "uac_pcmu_play.xml")
    assert code == 0, out
    async with asyncio.timeout(5):
        await env.sip.gateway.wait_idle()
    status, events = await _only_record(env)
    assert status == "completed"
    stats = json.loads(next(e for e in events if e.startswith("rtp_stats:")).split(":", 1)[1])
    assert stats["packets_received"] >= 195  # the pcap holds 200 packets
    assert stats["packets_sent"] >= 150  # the echo went back to sipp's media port


async def test_sipp_cancel_gets_487(env: SipEnv) -> None:
    code, out = await _sipp(env, "uac_cancel.xml")
    assert code == 0, out
    assert env.sip.gateway.live_calls == 0


async def test_sipp_options(env: SipEnv) -> None:
    code, out = await _sipp(env, "uac_options.xml")
    assert code == 0, out


async def test_sipp_with_message_loss(env: SipEnv) -> None:
    # -lost 10: sipp drops 10 % of what it sends and receives; our retransmission
    # timers and its own must still complete the call (a few seeds to be sure).
    for _ in range(2):
        code, out = await _sipp(env, "uac_options.xml", "-lost", "10", "-recv_timeout", "20000")
        assert code == 0, out
    code, out = await _sipp(env, "uac_pcmu_play.xml", "-lost", "10", limit=60)
    assert code == 0, out


async def test_rfc4475_live_over_udp(env: SipEnv) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            queue.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    index = json.loads((TESTDATA / "sip" / "rfc4475" / "index.json").read_text())
    try:
        for item in index:
            data = (TESTDATA / "sip" / "rfc4475" / item["file"]).read_bytes()
            transport.sendto(data, ("127.0.0.1", env.sip_port))
        await asyncio.sleep(0)
        port = transport.get_extra_info("sockname")[1]
        options = (
            f"OPTIONS sip:{ECHO_NUMBER}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKafter4475;rport\r\n"
            "From: <sip:t@127.0.0.1>;tag=x\r\nTo: <sip:1@127.0.0.1>\r\nCall-ID: after-4475\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        transport.sendto(options, ("127.0.0.1", env.sip_port))
        async with asyncio.timeout(10):
            while True:
                raw = await queue.get()
                try:
                    message = parse(raw)
                except Exception:
                    continue
                if isinstance(message, SipResponse) and message.call_id == "after-4475":
                    assert message.status == 200
                    break
        assert env.sip.ua.stats["handler_errors"] == 0
    finally:
        transport.close()
