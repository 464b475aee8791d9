"""Full calls through a real speech worker over SIP (real models, real server, loopback).

* Our own UA (``voxgate.sip.ua.UserAgent``) calls a SIP number mapped to the
  demo receptionist, sends paced RTP (silence, then a recorded question) and
  keeps the agent's RTP: the greeting transcribed back with faster-whisper
  has the expected words, and the opening-hours question is answered on the
  ``hours`` branch.
* Asking for a person makes the flow transfer to the tenant's ``operator``
  target: with sipp as the caller accepting our REFER (202 + NOTIFY sipfrag
  200), the call leaves with a BYE; with a premium-rate ``operator`` the dial
  policy refuses (audited) and the caller hears the fallback apology.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtest.audio import read_mulaw_wav
from tests.e2e.sip_env import TESTDATA, SipEnv, sip_server
from voxgate.agents.templates import get_template
from voxgate.server.worker_agent import SPEECH
from voxgate.sip.rtp import RtpPacket
from voxgate.sip.sdp import SdpSession, SessionDescription, parse_sdp
from voxgate.sip.transaction import TimerConfig, Transport
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import IncomingInvite, Session, SessionEnd, UserAgent
from voxgate.sip.uri import SipUri
from voxgate.tenants.calls import CallRecords
from voxgate.tenants.models import NumberCreate
from voxgate.tenants.transfer_targets import TransferTargets, TransferTargetStore

DESK_NUMBER = "+15551230009"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
AUDIO = TESTDATA / "audio"
SILENCE = b"\xff" * 160
GREETING_WORDS = ("opening hours", "appointment")


def _words(text: str) -> str:
    return " ".join("".join(c.lower() if c.isalnum() else " " for c in text).split())


@dataclass
class DeskEnv:
    sip: SipEnv
    agent_id: str


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[DeskEnv]:
    async with sip_server(tmp_path) as env:
        flow = get_template("demo-receptionist").flow_document()
        agent = await env.services.agents.create(
            env.tenant_id, "desk", "flow", "demo-receptionist", flow, []
        )
        await env.services.numbers.create(
            env.tenant_id, NumberCreate(number=DESK_NUMBER, provider="sip", agent_id=agent.id)
        )
        speech = env.server.app[SPEECH]
        speech.supervisor.activate()
        speech.prompts.schedule(env.tenant_id, flow)
        async with asyncio.timeout(180):
            await speech.supervisor.wait_prewarmed()
            await speech.prompts.idle.wait()
        yield DeskEnv(env, agent.id)


class _Listener:
    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def session_confirmed(self, session: Session) -> None:
        pass

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        raise AssertionError("unexpected re-INVITE")

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        pass

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        self.ended.set()


class _NoCalls:
    async def handle_invite(self, invite: IncomingInvite) -> None:
        invite.reject(603)


@dataclass
class _Ear(asyncio.DatagramProtocol):
    """Keeps the agent's PCMU payloads and when the last loud one came."""

    audio: bytearray = field(default_factory=bytearray)
    last_loud: float = 0.0
    loud_frames: int = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        packet = RtpPacket.parse(data)
        if packet.payload_type != 0:
            return
        self.audio += packet.payload
        # µ-law bytes near 0xff/0x7f are near zero; speech spreads far from them.
        if sum(1 for b in packet.payload if (b & 0x7F) < 0x60) > 40:
            self.last_loud = time.monotonic()
            self.loud_frames += 1


class _Caller:
    """Our UA on one call: paced RTP out, the agent's audio in."""

    def __init__(self, rtp: asyncio.DatagramTransport, ear: _Ear, remote: tuple[str, int]):
        self.rtp, self.ear, self.remote = rtp, ear, remote
        self.seq = 0

    async def send(self, ulaw: bytes) -> None:
        start = time.monotonic()
        for i in range(0, len(ulaw) - 159, 160):
            packet = RtpPacket(
                payload_type=0, sequence_number=self.seq & 0xFFFF,
                timestamp=(self.seq * 160) & 0xFFFFFFFF, ssrc=0x5EED, payload=ulaw[i : i + 160],
            )  # fmt: skip
            self.rtp.sendto(packet.serialize(), self.remote)
            self.seq += 1
            # Pace against the wall clock (a real phone's 20 ms), never drift.
            delay = start + (i // 160 + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def until_agent_done(self, *, quiet_s: float, limit_s: float) -> bytes:
        """Send silence until the agent spoke and then stayed quiet ``quiet_s``; its audio."""
        start_len, start_loud = len(self.ear.audio), self.ear.loud_frames
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            await self.send(SILENCE * 10)
            spoke = self.ear.loud_frames - start_loud > 25
            if spoke and time.monotonic() - self.ear.last_loud >= quiet_s:
                return bytes(self.ear.audio[start_len:])
        raise AssertionError("the agent never finished speaking")


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    transports = SipTransports()
    await transports.listen_udp("127.0.0.1", 0)
    agent = UserAgent(
        transports, _NoCalls(), advertised_host="127.0.0.1", timers=TimerConfig(t1=0.1)
    )
    yield agent
    await agent.close()
    await transports.close()


@pytest.fixture
async def call(desk: DeskEnv, ua: UserAgent) -> AsyncIterator[tuple[_Caller, Session, _Listener]]:
    loop = asyncio.get_running_loop()
    rtp, ear = await loop.create_datagram_endpoint(_Ear, local_addr=("127.0.0.1", 0))
    port = rtp.get_extra_info("sockname")[1]
    address = desk.sip.sip.transports.local_address(Transport.UDP)
    assert address is not None
    listener = _Listener()
    async with asyncio.timeout(15):
        session = await ua.invite(
            SipUri(host="127.0.0.1", port=address[1], user=DESK_NUMBER),
            address,
            sdp=SdpSession("127.0.0.1", port).create_offer().to_bytes(),
            listener=listener,
        )
    media = parse_sdp(session.remote_sdp).media[0]
    try:
        yield _Caller(rtp, ear, ("127.0.0.1", media.port)), session, listener
    finally:
        if not session.is_ended:
            with contextlib.suppress(Exception):  # the call may be ending under us
                async with asyncio.timeout(5):
                    await session.hangup()
        rtp.close()


async def _events(desk: DeskEnv) -> list[tuple[str, str]]:
    async with asyncio.timeout(10):
        await desk.sip.sip.gateway.wait_idle()
    records = CallRecords(desk.sip.services.store)
    page = await records.list(desk.sip.tenant_id)
    assert len(page.calls) == 1
    detail = await records.detail(desk.sip.tenant_id, page.calls[0].id)
    return [(e.kind, e.detail) for e in detail.events]


async def test_greeting_and_hours_question_over_sip(
    desk: DeskEnv,
    call: tuple[_Caller, Session, _Listener],
    transcribe: Callable[[bytes], str],
) -> None:
    caller, session, _listener = call
    greeting = await caller.until_agent_done(quiet_s=1.2, limit_s=40)
    heard = _words(await asyncio.to_thread(transcribe, greeting))
    for words in GREETING_WORDS:
        assert words in heard, heard
    await caller.send(read_mulaw_wav(AUDIO / "opening_hours_saturday.wav"))
    answer = await caller.until_agent_done(quiet_s=1.5, limit_s=40)
    reply = _words(await asyncio.to_thread(transcribe, answer))
    assert "saturday" in reply and ("ten to two" in reply or "10 to 2" in reply), reply
    async with asyncio.timeout(5):
        await session.hangup()
    events = await _events(desk)
    # The hours branch spoke (its node's text), not the re-prompt or another branch.
    said = [d for k, d in events if k == "agent_say"]
    assert any(d.startswith("We're open Monday to Friday") for d in said), said
    assert not any(d.startswith("Sorry, I didn't catch that") for d in said), said


async def test_refused_transfer_is_audited_and_the_fallback_speaks(
    desk: DeskEnv,
    call: tuple[_Caller, Session, _Listener],
    transcribe: Callable[[bytes], str],
) -> None:
    caller, _session, listener = call
    services = desk.sip.services
    await TransferTargetStore(services.store).put(
        desk.sip.tenant_id, TransferTargets(targets={"operator": "+19005550100"})
    )
    await caller.until_agent_done(quiet_s=1.2, limit_s=40)
    await caller.send(read_mulaw_wav(AUDIO / "speak_to_person.wav"))
    # "I'll put you through", the refusal, the apology, then the agent hangs up.
    async with asyncio.timeout(60):
        while not listener.ended.is_set():
            await caller.send(SILENCE * 10)
    heard = _words(await asyncio.to_thread(transcribe, bytes(caller.ear.audio)))
    assert "put you through" in heard and "sorry" in heard, heard
    entries = await services.audit.list(desk.sip.tenant_id)
    refused = [e for e in entries if e.action == "dial.refused"]
    assert refused and refused[0].detail["purpose"] == "transfer"
    assert refused[0].detail["reason"] == "premium_rate"
    events = await _events(desk)
    kinds = [k for k, _ in events]
    assert "transfer_failed" in kinds and "transferred" not in kinds, events


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")
async def test_sipp_accepts_our_refer_and_the_call_leaves(desk: DeskEnv) -> None:
    env = desk.sip
    await TransferTargetStore(env.services.store).put(
        env.tenant_id, TransferTargets(targets={"operator": "+15550100222"})
    )
    args = [
        "sipp", f"127.0.0.1:{env.sip_port}", "-sf", str(SCENARIOS / "uac_dtmf_refer.xml"),
        "-s", DESK_NUMBER, "-i", "127.0.0.1", "-p", str(_free_udp_port()), "-mi", "127.0.0.1",
        "-mp", str(_free_udp_port()), "-m", "1", "-timeout", "90", "-timeout_error", "-nostdin",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(100):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    events = await _events(desk)
    assert ("transferred", "+15550100222") in events, events
    assert ("transfer_requested", "operator") in events
    records = CallRecords(env.services.store)
    call = (await records.list(env.tenant_id)).calls[0]
    assert call.end_reason == "transfer"
