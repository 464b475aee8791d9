"""Inbound SIP routing on a real server (embedded Redis), called by a voxgate UAC on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.e2e.sip_env import ECHO_NUMBER, PROMPT_NUMBER, SipEnv, sip_server
from voxgate.server.app import create_app
from voxgate.server.call_control import CALLS
from voxgate.server.config import Config
from voxgate.server.services import Services
from voxgate.server.sip_gateway import dial_user
from voxgate.sip.digest import DigestClient
from voxgate.sip.rtp import RtpPacket
from voxgate.sip.sdp import Direction, SdpSession, SessionDescription, parse_sdp
from voxgate.sip.transaction import TimerConfig, Transport
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import CallFailed, IncomingInvite, Session, SessionEnd, UserAgent
from voxgate.sip.uri import SipUri
from voxgate.tenants.calls import CallRecords
from voxgate.tenants.models import Quotas, TenantCreate
from voxgate.tenants.sip_acl import SECRET_NAME, SipAclStore, SipAclUpdate
from voxgate.tenants.trunks import Trunk, TrunkCreate, TrunkStore, TrunkUpdate


class Listener:
    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.reasons: list[SessionEnd] = []

    def session_confirmed(self, session: Session) -> None:
        pass

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        raise AssertionError("unexpected re-INVITE")

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        pass

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        self.reasons.append(reason)
        self.ended.set()


class NoCalls:
    async def handle_invite(self, invite: IncomingInvite) -> None:
        invite.reject(603)


class Rtp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.packets.put_nowait(data)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[SipEnv]:
    async with sip_server(tmp_path) as env:
        yield env


@pytest.fixture
async def caller() -> AsyncIterator[UserAgent]:
    transports = SipTransports()
    await transports.listen_udp("127.0.0.1", 0)
    await transports.listen_tcp("127.0.0.1", 0)
    ua = UserAgent(transports, NoCalls(), advertised_host="127.0.0.1", timers=TimerConfig(t1=0.1))
    yield ua
    await ua.close()
    await transports.close()


async def _call(
    env: SipEnv,
    caller: UserAgent,
    number: str = ECHO_NUMBER,
    *,
    port: int = 40000,
    sdp: bytes | None = None,
    credentials: DigestClient | None = None,
    transport: Transport = Transport.UDP,
    request_user: str | None = None,
) -> tuple[Session, Listener]:
    listener = Listener()
    body = sdp if sdp is not None else SdpSession("127.0.0.1", port).create_offer().to_bytes()
    address = env.sip.transports.local_address(transport)
    assert address is not None
    async with asyncio.timeout(10):
        session = await caller.invite(
            SipUri(host="127.0.0.1", port=address[1], user=request_user or number),
            address,
            to_uri=SipUri(host="127.0.0.1", port=address[1], user=number),
            sdp=body,
            listener=listener,
            transport=transport,
            credentials=credentials,
        )
    return session, listener


async def _status(env: SipEnv, caller: UserAgent, number: str = ECHO_NUMBER, **kw: object) -> int:
    with pytest.raises(CallFailed) as failed:
        await _call(env, caller, number, **kw)  # type: ignore[arg-type]
    return failed.value.status


async def test_echo_call_media_both_ways_and_record(env: SipEnv, caller: UserAgent) -> None:
    loop = asyncio.get_running_loop()
    rtp_transport, rtp = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
    port = rtp_transport.get_extra_info("sockname")[1]
    session, _listener = await _call(env, caller, port=port)
    answer = parse_sdp(session.remote_sdp)
    media = answer.media[0]
    assert media.payload_types[0] == 0 and answer.media_direction(media) is Direction.SENDRECV
    assert "telephone-event" in {m.encoding for m in media.rtpmaps().values()}
    # Send 50 frames of a recognisable payload; the echo agent returns them.
    payload = bytes(range(160))
    for seq in range(50):
        packet = RtpPacket(
            payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=0x1234, payload=payload
        )
        rtp_transport.sendto(packet.serialize(), ("127.0.0.1", media.port))
        await asyncio.sleep(0.02)
    echoed = 0
    async with asyncio.timeout(5):
        while echoed < 10:
            packet = RtpPacket.parse(await rtp.packets.get())
            if packet.payload_type == 0 and packet.payload == payload:
                echoed += 1
    calls = list(env.sip.gateway._calls)
    assert len(calls) == 1
    call_id = calls[0]
    async with asyncio.timeout(5):
        response = await session.hangup()
        await env.sip.gateway.wait_idle()
    assert response is not None and response.status == 200
    rtp_transport.close()
    record = await CallRecords(env.services.store).detail(env.tenant_id, call_id)
    assert record.call.status == "completed"
    assert record.call.end_reason == "caller_hangup"
    assert record.call.frames_out >= 10
    stats = [e for e in record.events if e.kind == "rtp_stats"]
    assert stats and '"packets_received":50' in stats[0].detail


async def test_number_without_plus_and_over_tcp(env: SipEnv, caller: UserAgent) -> None:
    session, _ = await _call(env, caller, ECHO_NUMBER.lstrip("+"), transport=Transport.TCP)
    async with asyncio.timeout(5):
        assert (await session.hangup()) is not None


async def test_unknown_number_is_404(env: SipEnv, caller: UserAgent) -> None:
    assert await _status(env, caller, "+19999999999") == 404
    assert await _status(env, caller, "not-a-number") == 404


async def test_no_common_codec_is_488(env: SipEnv, caller: UserAgent) -> None:
    offer = SdpSession("127.0.0.1", 40000).create_offer().to_bytes()
    offer = offer.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9").replace(
        b"a=rtpmap:0 PCMU/8000\r\n", b""
    )
    offer = offer.replace(b"a=rtpmap:8 PCMA/8000\r\n", b"")
    assert await _status(env, caller, sdp=offer) == 488


async def test_acl_cidrs_and_digest(env: SipEnv, caller: UserAgent) -> None:
    acls = SipAclStore(env.services.store)
    await acls.put(env.tenant_id, SipAclUpdate(cidrs=["10.0.0.0/8"]))
    assert await _status(env, caller) == 403
    await acls.put(env.tenant_id, SipAclUpdate(cidrs=["127.0.0.0/8"], username="trunk"))
    await env.services.secrets.put(env.tenant_id, SECRET_NAME, {"password": "s3cret-pass"}, "test")
    assert await _status(env, caller) == 401
    assert await _status(env, caller, credentials=DigestClient("trunk", "wrong-pass")) == 401
    session, _ = await _call(env, caller, credentials=DigestClient("trunk", "s3cret-pass"))
    async with asyncio.timeout(5):
        await session.hangup()


async def test_calls_through_a_trunk(env: SipEnv, caller: UserAgent) -> None:
    trunks = TrunkStore(env.services.store, env.services.secrets)
    ours = await trunks.create(
        env.tenant_id,
        TrunkCreate(name="carrier", hosts=["127.0.0.1"], username="100000", register=False),
    )
    other = await env.services.registry.create(TenantCreate(name="other"), "test")
    theirs = await trunks.create(
        other.id, TrunkCreate(name="theirs", hosts=["127.0.0.1"], username="200000", register=False)
    )
    env.sip.gateway._trunk_snapshot = None  # see the new trunks now
    # Delivered to our registration's Contact (user = trunk id): To is the number.
    session, _ = await _call(env, caller, ECHO_NUMBER, request_user=ours.id)
    async with asyncio.timeout(5):
        await session.hangup()
    # Another tenant's trunk never reaches this tenant's numbers.
    assert await _status(env, caller, ECHO_NUMBER, request_user=theirs.id) == 404
    # An ACL keeps strangers out, but the tenant's carrier (by source) gets in.
    await SipAclStore(env.services.store).put(env.tenant_id, SipAclUpdate(cidrs=["10.0.0.0/8"]))
    assert await _status(env, caller) == 403
    await trunks.update(env.tenant_id, ours.id, TrunkUpdate(inbound_sources=["127.0.0.0/8"]))
    env.sip.gateway._trunk_snapshot = None
    session, _ = await _call(env, caller)
    async with asyncio.timeout(5):
        await session.hangup()


def test_dial_user_per_preset() -> None:
    generic = msgspec.convert(_TRUNK | {"preset": "generic"}, Trunk)
    voipms = msgspec.convert(_TRUNK | {"preset": "voipms"}, Trunk)
    assert dial_user(generic, "+442071234567") == "+442071234567"
    assert dial_user(voipms, "+14155550100") == "14155550100"
    assert dial_user(voipms, "+442071234567") == "011442071234567"


_TRUNK = {
    "id": "trk_x", "name": "x", "hosts": ["h"], "username": "1000", "has_password": False,
    "register": False, "register_expires": 300, "caller_id": None, "transport": "udp",
    "inbound_sources": [], "enabled": True, "created_at": 0.0, "updated_at": 0.0,
}  # fmt: skip


async def test_draining_is_503(env: SipEnv, caller: UserAgent) -> None:
    env.sip.gateway.draining = True
    assert await _status(env, caller) == 503


async def test_over_quota_is_503_with_retry_after(tmp_path: Path, caller: UserAgent) -> None:
    async with sip_server(tmp_path, quotas=Quotas(max_concurrent_calls=1, max_cps=100)) as env:
        session, _ = await _call(env, caller)
        assert await _status(env, caller) == 503
        async with asyncio.timeout(5):
            await session.hangup()
            await env.sip.gateway.wait_idle()
        second, _ = await _call(env, caller)
        async with asyncio.timeout(5):
            await second.hangup()


async def test_remote_hangup_from_prompt_agent(env: SipEnv, caller: UserAgent) -> None:
    loop = asyncio.get_running_loop()
    rtp_transport, rtp = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
    port = rtp_transport.get_extra_info("sockname")[1]
    _session, listener = await _call(env, caller, PROMPT_NUMBER, port=port)
    async with asyncio.timeout(10):
        await listener.ended.wait()  # the prompt agent hangs up after its tones
    assert listener.reasons == [SessionEnd.REMOTE_BYE]
    assert rtp.packets.qsize() > 50  # about 1.7 s of tones arrived
    rtp_transport.close()


async def test_port_zero_retries_when_tcp_cannot_take_the_udp_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno as errno_codes

    from voxgate.server import sip_gateway

    real_listen_tcp = SipTransports.listen_tcp
    refusals: list[int] = []

    async def busy_once(self: SipTransports, host: str, port: int) -> object:
        if not refusals:
            refusals.append(port)
            raise OSError(errno_codes.EADDRINUSE, "address already in use")
        return await real_listen_tcp(self, host, port)

    monkeypatch.setattr(SipTransports, "listen_tcp", busy_once)
    config = Config(data_dir=tmp_path / "data", sip_port=0, rtp_ports=(47000, 47099))
    services = await Services.open(config)
    try:
        app = create_app(config, services)
        listener = await sip_gateway.start_sip(config, services, app[CALLS], ring_seconds=0)
        try:
            assert len(refusals) == 1  # the first free UDP port was busy over TCP
            assert set(listener.endpoints) == {"sip_udp", "sip_tcp"}
        finally:
            await listener.close()
    finally:
        await services.close()
