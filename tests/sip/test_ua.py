"""The user agent core on loopback: a voxgate UAC calling a voxgate UAS, and raw requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from voxgate.sip.digest import DigestClient, DigestServer, DigestVerdict, parse_credentials
from voxgate.sip.errors import SipUsageError
from voxgate.sip.message import SipRequest, SipResponse, make_response, parse
from voxgate.sip.sdp import Direction, NoCommonCodec, SdpSession, SessionDescription, parse_sdp
from voxgate.sip.transaction import Address, TimerConfig, Transaction, Transport
from voxgate.sip.transport import SipTransports
from voxgate.sip.ua import (
    ALLOWED_METHODS,
    CallFailed,
    IncomingInvite,
    ReferFailed,
    Session,
    SessionEnd,
    UserAgent,
    parse_dtmf_info,
    parse_sipfrag_status,
)
from voxgate.sip.uri import SipUri

Behaviour = Callable[[IncomingInvite], Awaitable[None]]


@dataclass
class Recorder:
    """SessionListener that records what happened."""

    sdp: SdpSession = field(default_factory=lambda: SdpSession("127.0.0.1", 40000))
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reasons: list[SessionEnd] = field(default_factory=list)
    dtmf: list[tuple[str, float]] = field(default_factory=list)
    dtmf_seen: asyncio.Event = field(default_factory=asyncio.Event)
    reoffers: list[Direction] = field(default_factory=list)

    def session_confirmed(self, session: Session) -> None:
        self.confirmed.set()

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        answer, params = self.sdp.answer(offer)
        self.reoffers.append(params.direction)
        return answer.to_bytes()

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        self.dtmf.append((digit, duration))
        self.dtmf_seen.set()

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        self.end_reasons.append(reason)
        self.ended.set()


class Handler:
    def __init__(self) -> None:
        self.behaviour: Behaviour = self.answer
        self.listener = Recorder()
        self.sessions: list[Session] = []
        self.invites: list[IncomingInvite] = []
        self.release = asyncio.Event()

    async def handle_invite(self, invite: IncomingInvite) -> None:
        self.invites.append(invite)
        await self.behaviour(invite)

    async def answer(self, invite: IncomingInvite) -> None:
        assert invite.offer is not None
        try:
            answer, _ = self.listener.sdp.answer(invite.offer)
        except NoCommonCodec:
            invite.reject(488)
            return
        self.sessions.append(invite.answer(answer.to_bytes(), self.listener))

    async def ring_forever(self, invite: IncomingInvite) -> None:
        invite.ring()
        await invite.cancelled.wait()


@dataclass
class Pair:
    uas: UserAgent
    uac: UserAgent
    handler: Handler
    uas_transports: SipTransports
    uac_transports: SipTransports

    def address(self, transport: Transport = Transport.UDP) -> Address:
        address = self.uas_transports.local_address(transport)
        assert address is not None
        return address


async def _agent(handler: Handler) -> tuple[UserAgent, SipTransports]:
    transports = SipTransports()
    await transports.listen_udp("127.0.0.1", 0)
    await transports.listen_tcp("127.0.0.1", 0)
    ua = UserAgent(
        transports, handler, advertised_host="127.0.0.1", timers=TimerConfig(t1=0.05, t4=0.5)
    )
    return ua, transports


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    handler = Handler()
    uas, uas_t = await _agent(handler)
    uac, uac_t = await _agent(Handler())
    yield Pair(uas, uac, handler, uas_t, uac_t)
    for ua, transports in ((uac, uac_t), (uas, uas_t)):
        await ua.close()
        await transports.close()


def _offer(direction: Direction = Direction.SENDRECV) -> bytes:
    return SdpSession("127.0.0.1", 41000).create_offer(direction).to_bytes()


async def _call(pair: Pair, transport: Transport = Transport.UDP) -> tuple[Session, Recorder]:
    listener = Recorder()
    async with asyncio.timeout(5):
        session = await pair.uac.invite(
            SipUri(host="127.0.0.1", user="+15551230001"),
            pair.address(transport),
            sdp=_offer(),
            listener=listener,
            transport=transport,
        )
        await pair.handler.listener.confirmed.wait()
    return session, listener


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_call_answer_ack_and_bye_from_caller(pair: Pair, transport: Transport) -> None:
    session, caller = await _call(pair, transport)
    assert caller.confirmed.is_set()
    assert b"m=audio" in session.remote_sdp
    assert pair.handler.invites[0].called_user == "+15551230001"
    async with asyncio.timeout(5):
        response = await session.hangup()
        await pair.handler.listener.ended.wait()
    assert response is not None and response.status == 200
    assert pair.handler.listener.end_reasons == [SessionEnd.REMOTE_BYE]
    assert caller.end_reasons == [SessionEnd.LOCAL_BYE]
    assert pair.uas.sessions == [] and pair.uac.sessions == []


async def test_bye_from_callee(pair: Pair) -> None:
    _, caller = await _call(pair)
    async with asyncio.timeout(5):
        response = await pair.handler.sessions[0].hangup()
        await caller.ended.wait()
    assert response is not None and response.status == 200
    assert caller.end_reasons == [SessionEnd.REMOTE_BYE]


async def test_reinvite_hold_and_unhold(pair: Pair) -> None:
    session, _ = await _call(pair)
    offerer = SdpSession("127.0.0.1", 41000)
    for direction, expected in (
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.SENDRECV, Direction.SENDRECV),
    ):
        body = offerer.create_offer(direction).to_bytes()
        tx = pair.uac._send_request_in(session, "INVITE", body=body, content_type="application/sdp")
        waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        pair.uac._waiters[tx] = waiter
        async with asyncio.timeout(5):
            response = await waiter
        assert response.status == 200
        assert (
            parse_sdp(response.body).media_direction(parse_sdp(response.body).media[0]) is expected
        )
        session.dialog.receive_response(response)
        ack = session.dialog.create_ack(tx.request.cseq.number, pair.uac.new_via(Transport.UDP))
        pair.uac.layer.send_ack(tx, ack)
        pair.uac._pump()
    assert pair.handler.listener.reoffers == [Direction.RECVONLY, Direction.SENDRECV]


async def test_info_dtmf_relay(pair: Pair) -> None:
    session, _ = await _call(pair)
    tx = pair.uac._send_request_in(
        session, "INFO", body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
    pair.uac._waiters[tx] = waiter
    async with asyncio.timeout(5):
        assert (await waiter).status == 200
        await pair.handler.listener.dtmf_seen.wait()
    assert pair.handler.listener.dtmf == [("5", 0.16)]


async def test_cancel_gets_487(pair: Pair) -> None:
    pair.handler.behaviour = pair.handler.ring_forever

    def cancel_when_ringing(outbound: object) -> None:
        async def later() -> None:
            await outbound.ringing.wait()  # type: ignore[attr-defined]
            outbound.cancel()  # type: ignore[attr-defined]

        asyncio.get_running_loop().create_task(later())

    with pytest.raises(CallFailed) as failed:
        async with asyncio.timeout(5):
            await pair.uac.invite(
                SipUri(host="127.0.0.1", user="1"),
                pair.address(),
                sdp=_offer(),
                listener=Recorder(),
                on_progress=cancel_when_ringing,
            )
    assert failed.value.status == 487
    assert pair.handler.invites[0].is_cancelled


async def test_no_common_codec_is_488(pair: Pair) -> None:
    body = (
        _offer().replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9").replace(b"a=rtpmap:0 PCMU/8000\r\n", b"")
    )
    with pytest.raises(CallFailed) as failed:
        async with asyncio.timeout(5):
            await pair.uac.invite(
                SipUri(host="127.0.0.1", user="1"), pair.address(), sdp=body, listener=Recorder()
            )
    assert failed.value.status == 488


async def test_handler_crash_is_500(pair: Pair) -> None:
    async def crash(invite: IncomingInvite) -> None:
        raise RuntimeError("bug")

    pair.handler.behaviour = crash
    with pytest.raises(CallFailed) as failed:
        async with asyncio.timeout(5):
            await pair.uac.invite(
                SipUri(host="127.0.0.1", user="1"),
                pair.address(),
                sdp=_offer(),
                listener=Recorder(),
            )
    assert failed.value.status == 500
    assert pair.uas.stats["handler_errors"] == 1


async def test_digest_challenge_retry(pair: Pair) -> None:
    server = DigestServer(secret=b"k" * 32, realm="voxgate")
    seen: list[str | None] = []

    async def challenge(invite: IncomingInvite) -> None:
        header = invite.request.headers.get("Authorization")
        seen.append(header)
        if header is None:
            invite.reject(401, headers=[("WWW-Authenticate", v) for v in server.challenges(0.0)])
            return
        creds = parse_credentials(header)
        verdict = server.verify(creds, "INVITE", password="s3cret", now=0.0)
        if verdict is not DigestVerdict.ACCEPTED:
            invite.reject(403)
            return
        await pair.handler.answer(invite)

    pair.handler.behaviour = challenge
    async with asyncio.timeout(5):
        session = await pair.uac.invite(
            SipUri(host="127.0.0.1", user="1"),
            pair.address(),
            sdp=_offer(),
            listener=Recorder(),
            credentials=DigestClient("alice", "s3cret"),
        )
    assert seen[0] is None and seen[1] is not None and "alice" in seen[1]
    assert session.invite.cseq.number == 2
    with pytest.raises(CallFailed) as failed:
        async with asyncio.timeout(5):
            await pair.uac.invite(
                SipUri(host="127.0.0.1", user="1"),
                pair.address(),
                sdp=_offer(),
                listener=Recorder(),
                credentials=DigestClient("alice", "wrong"),
            )
    assert failed.value.status == 403


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.queue.put_nowait(data)


async def _raw(pair: Pair, text: str) -> SipResponse:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        data = text.replace("PORT", str(port)).replace("\n", "\r\n").encode()
        transport.sendto(data, pair.address())
        async with asyncio.timeout(5):
            while True:
                message = parse(await peer.queue.get())
                assert isinstance(message, SipResponse)
                if message.status >= 200:
                    return message
    finally:
        transport.close()


def _request(method: str, uri: str = "sip:1@127.0.0.1", extra: str = "", cseq: str = "") -> str:
    return (
        f"{method} {uri} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK{method.lower()}{len(extra)};rport\n"
        "From: <sip:t@127.0.0.1>;tag=abc\nTo: <sip:1@127.0.0.1>\nCall-ID: raw-1\n"
        f"CSeq: 1 {cseq or method}\nMax-Forwards: 70\nContact: <sip:t@127.0.0.1:PORT>\n{extra}"
        "Content-Length: 0\n\n"
    )


async def test_options_200_with_rport(pair: Pair) -> None:
    response = await _raw(pair, _request("OPTIONS"))
    assert response.status == 200
    assert "INVITE" in (response.headers.get("Allow") or "")
    via = response.top_via
    assert via.received == "127.0.0.1" and via.rport is not None


@pytest.mark.parametrize(
    ("text", "status", "header"),
    [
        (_request("REGISTER"), 405, "Allow"),
        (_request("FROBNICATE"), 501, None),
        (_request("REFER", extra="Refer-To: <sip:2@127.0.0.1>\n"), 403, None),
        (_request("NOTIFY", extra="Event: refer\n"), 481, None),
        (_request("OPTIONS", "tel:+15551230001"), 416, None),
        (_request("OPTIONS", extra="Require: foo, 100rel\n"), 420, "Unsupported"),
        (_request("BYE", extra=""), 481, None),
        (_request("INVITE", extra="Accept: text/plain\n"), 406, None),
        (_request("OPTIONS", extra="CSeq: 2 OPTIONS\n"), 400, None),
        (_request("OPTIONS", cseq="INVITE"), 400, None),
    ],
)
async def test_uas_error_answers(pair: Pair, text: str, status: int, header: str | None) -> None:
    if text.startswith("BYE"):
        text = text.replace("To: <sip:1@127.0.0.1>", "To: <sip:1@127.0.0.1>;tag=nope")
    response = await _raw(pair, text)
    assert response.status == status
    if header is not None:
        assert response.headers.get(header)
    if status == 420:
        assert response.headers.get("Unsupported") == "foo, 100rel"


async def test_invite_with_unknown_body_is_415(pair: Pair) -> None:
    text = _request("INVITE").replace(
        "Content-Length: 0\n\n", "Content-Type: text/plain\nContent-Length: 5\n\nhello"
    )
    response = await _raw(pair, text)
    assert response.status == 415
    assert response.headers.get("Accept") == "application/sdp"


async def test_parse_error_is_400_with_reason(pair: Pair) -> None:
    text = _request("OPTIONS").replace("Max-Forwards: 70\n", "Max-Forwards: many\n")
    response = await _raw(pair, text)
    assert response.status == 400
    assert "Max-Forwards" in response.reason  # the parser's reason phrase


def test_parse_dtmf_info() -> None:
    assert parse_dtmf_info("application/dtmf-relay", b"Signal= #\r\nDuration= 250\r\n") == (
        "#",
        0.25,
    )
    assert parse_dtmf_info("application/dtmf", b"7") == ("7", 0.0)
    assert parse_dtmf_info("application/dtmf-relay", b"Signal=x") is None
    assert parse_dtmf_info("application/dtmf-relay", b"garbage") is None


def test_parse_sipfrag_status() -> None:
    assert parse_sipfrag_status(b"SIP/2.0 200 OK\r\n") == (200, "OK")
    assert parse_sipfrag_status(b"SIP/2.0 486 Busy Here") == (486, "Busy Here")
    assert parse_sipfrag_status(b"SIP/2.0 99 Low") is None
    assert parse_sipfrag_status(b"HTTP/1.1 200 OK") is None
    assert parse_sipfrag_status(b"") is None


async def test_refer_from_peer_is_declined(pair: Pair) -> None:
    session, _ = await _call(pair)
    # The UAS (an agent's call) is asked to transfer: it must not follow.
    with pytest.raises(ReferFailed) as failed:
        async with asyncio.timeout(5):
            await session.refer(SipUri(host="127.0.0.1", user="+15550000000"))
    assert failed.value.status == 603
    assert not session.is_ended  # the call itself goes on
    assert "REFER" in ALLOWED_METHODS and "NOTIFY" in ALLOWED_METHODS


def _accept_refers(pair: Pair, notifies: list[tuple[bytes, str]]) -> None:
    """Make the UAS accept REFERs (202) and send these NOTIFYs (body, Subscription-State)."""
    uas = pair.uas

    def on_refer(request: SipRequest, tx: Transaction) -> None:
        assert request.headers.get("Refer-To") == "<sip:+15550000000@127.0.0.1>"
        session = uas._in_dialog(request, tx)
        assert session is not None
        uas._respond(tx, make_response(request, 202))
        for body, state in notifies:
            headers = [("Event", "refer"), ("Subscription-State", state)]
            kind = "message/sipfrag" if body else None
            uas._send_request_in(session, "NOTIFY", body=body, content_type=kind, headers=headers)

    uas._on_refer = on_refer  # type: ignore[method-assign]


_TRYING = (b"SIP/2.0 100 Trying\r\n", "active;expires=60")
_DONE = "terminated;reason=noresource"


@pytest.mark.parametrize(
    ("final", "expected"),
    [(b"SIP/2.0 200 OK\r\n", 200), (b"SIP/2.0 486 Busy Here\r\n", 486), (b"", 500)],
)
async def test_refer_accepted_and_outcome_from_notify(
    pair: Pair, final: bytes, expected: int
) -> None:
    session, _ = await _call(pair)
    _accept_refers(pair, [_TRYING, (final, _DONE)])
    target = SipUri(host="127.0.0.1", user="+15550000000")
    async with asyncio.timeout(5):
        if expected < 300:
            assert await session.refer(target) == expected
        else:
            with pytest.raises(ReferFailed) as failed:
                await session.refer(target)
            assert failed.value.status == expected
    assert session.refer_progress[0] == (100, "Trying")


async def test_refer_without_outcome_times_out(pair: Pair) -> None:
    session, _ = await _call(pair)
    _accept_refers(pair, [_TRYING])
    target = SipUri(host="127.0.0.1", user="+15550000000")
    async with asyncio.timeout(5):
        assert await session.refer(target, outcome_timeout=None) == 202
        with pytest.raises(ReferFailed) as failed:
            await session.refer(target, outcome_timeout=0.3)
    assert failed.value.status == 408


async def test_notify_with_other_event_is_489(pair: Pair) -> None:
    session, _ = await _call(pair)
    tx = pair.uac._send_request_in(session, "NOTIFY", headers=[("Event", "dialog")])
    waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
    pair.uac._waiters[tx] = waiter
    async with asyncio.timeout(5):
        assert (await waiter).status == 489


async def test_send_request_runs_a_prebuilt_request(pair: Pair) -> None:
    text = _request("OPTIONS").replace("PORT", "5999").replace("\n", "\r\n").encode()
    request = parse(text)
    assert isinstance(request, SipRequest)
    request.headers.set_all("Via", [str(pair.uac.new_via(Transport.UDP))])
    async with asyncio.timeout(5):
        response = await pair.uac.send_request(request, pair.address(), Transport.UDP)
    assert response.status == 200
    assert pair.uac._waiters == {}
    invite = parse(_request("INVITE").replace("PORT", "5999").replace("\n", "\r\n").encode())
    assert isinstance(invite, SipRequest)
    with pytest.raises(SipUsageError):
        await pair.uac.send_request(invite, pair.address(), Transport.UDP)
