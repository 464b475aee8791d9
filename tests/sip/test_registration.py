"""REGISTER client on a fake clock against an in-test registrar (digest checked for real)."""

from __future__ import annotations

import random

import pytest

from voxgate.sip.digest import DigestServer, DigestVerdict, parse_credentials
from voxgate.sip.errors import SipUsageError
from voxgate.sip.message import SipRequest, SipResponse, make_response, parse
from voxgate.sip.registration import (
    TRANSITIONS,
    RegisterRequest,
    RegistrationClient,
    RegistrationConfig,
    RegState,
)
from voxgate.sip.transaction import Transport

LOCAL = ("192.0.2.10", 5062)
HOSTS = (("atlanta.voip.ms", 5060), ("chicago.voip.ms", 5060), ("dallas.voip.ms", 5080))


class Registrar:
    """Answers REGISTERs like a provider: 401 first, then checks the digest."""

    def __init__(self, password: str = "s3cret", *, grant: int | None = None) -> None:
        self.server = DigestServer(secret=b"k" * 32, realm="voip.ms", algorithms=("MD5",))
        self.password = password
        self.grant = grant
        self.seen: list[SipRequest] = []

    def answer(self, request: SipRequest, now: float) -> SipResponse:
        # Round-trip through the wire format: what we build must parse.
        parsed = parse(request.serialize())
        assert isinstance(parsed, SipRequest)
        self.seen.append(parsed)
        header = parsed.headers.get("Authorization")
        if header is None:
            return self._challenge(parsed, now)
        verdict = self.server.verify(
            parse_credentials(header), "REGISTER", password=self.password, now=now
        )
        if verdict is not DigestVerdict.ACCEPTED:
            return self._challenge(parsed, now, stale=verdict is DigestVerdict.STALE)
        ok = make_response(parsed, 200, to_tag="reg")
        expires = parsed.expires
        contact = parsed.headers.get("Contact")
        assert contact is not None
        granted = expires if self.grant is None or expires == 0 else self.grant
        ok.headers.add("Contact", f"{contact};expires={granted}")
        return ok

    def _challenge(self, request: SipRequest, now: float, stale: bool = False) -> SipResponse:
        response = make_response(request, 401, to_tag="reg")
        for value in self.server.challenges(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response


def client(**changes: object) -> RegistrationClient:
    settings: dict[str, object] = {
        "hosts": HOSTS,
        "username": "123456_agent",
        "password": "s3cret",
        "expires": 300,
        "backoff_initial": 2.0,
        "backoff_max": 60.0,
    }
    settings.update(changes)
    return RegistrationClient(RegistrationConfig(**settings), LOCAL)  # type: ignore[arg-type]


def state_of(reg: RegistrationClient) -> RegState:
    """The state, read through a call so mypy does not narrow it across steps."""
    return reg.state


def one(reg: RegistrationClient) -> RegisterRequest:
    out = reg.take_requests()
    assert len(out) == 1, out
    return out[0]


def exchange(reg: RegistrationClient, registrar: Registrar, now: float) -> None:
    """Answer every request the client sends until it stops sending (bounded)."""
    for _ in range(10):
        out = reg.take_requests()
        if not out:
            return
        for item in out:
            reg.receive_response(registrar.answer(item.request, now), now)
    raise AssertionError("client kept sending")


def test_table_has_no_exits_from_unknown_states() -> None:
    assert all(isinstance(s, RegState) for pair in TRANSITIONS for s in pair[:1])
    with pytest.raises(SipUsageError):
        RegistrationConfig(hosts=(), username="u", password="p")


def test_challenge_then_register_and_refresh_at_80_percent() -> None:
    reg = client()
    registrar = Registrar()
    reg.start(0.0)
    first = one(reg)
    assert first.destination == HOSTS[0] and first.transport is Transport.UDP
    req = first.request
    assert str(req.uri) == "sip:atlanta.voip.ms"
    assert req.headers.get("Expires") == "300"
    assert str(req.to_addr.uri) == "sip:123456_agent@atlanta.voip.ms"
    assert "rport" in req.top_via.params and req.top_via.branch
    assert str(reg.contact.uri) == "sip:123456_agent@192.0.2.10:5062"
    reg.receive_response(registrar.answer(req, 0.0), 0.0)
    assert state_of(reg) is RegState.REGISTERING
    second = one(reg)
    assert second.request.call_id == req.call_id
    assert second.request.cseq.number == req.cseq.number + 1
    reg.receive_response(registrar.answer(second.request, 0.1), 0.1)
    assert state_of(reg) is RegState.REGISTERED
    assert reg.next_timeout() == pytest.approx(0.1 + 240)
    status = reg.status(10.0)
    assert status.state == "registered" and status.expires_in == pytest.approx(290.1)
    assert status.last_error is None and status.registrations == 1

    reg.handle_timer(200.0)  # not due yet
    assert reg.take_requests() == []
    reg.handle_timer(240.1)
    refresh = one(reg)
    # The refresh reuses the last challenge: one round trip, nonce count 2.
    auth = parse_credentials(refresh.request.headers.get("Authorization"))
    assert auth.nc == "00000002"
    assert refresh.request.call_id == req.call_id
    assert state_of(reg) is RegState.REGISTERING
    reg.receive_response(registrar.answer(refresh.request, 240.2), 240.2)
    assert state_of(reg) is RegState.REGISTERED
    assert reg.next_timeout() == pytest.approx(240.2 + 240)


def test_granted_expiry_from_contact_and_header() -> None:
    reg = client()
    registrar = Registrar(grant=120)
    reg.start(0.0)
    exchange(reg, registrar, 0.0)
    assert state_of(reg) is RegState.REGISTERED
    assert reg.next_timeout() == pytest.approx(96.0)
    # Without a Contact expires param, the Expires header decides.
    reg2 = client()
    reg2.start(0.0)
    request = one(reg2).request
    ok = make_response(request, 200, to_tag="x")
    ok.headers.add("Expires", "60")
    reg2.receive_response(ok, 1.0)
    assert reg2.next_timeout() == pytest.approx(1.0 + 48.0)


def test_wrong_password_fails_and_retries_late() -> None:
    reg = client(password="wrong", failed_retry=1800.0)
    registrar = Registrar()
    reg.start(0.0)
    exchange(reg, registrar, 0.0)
    assert state_of(reg) is RegState.FAILED
    assert len(registrar.seen) == 2  # challenge answered once, then given up
    status = reg.status(0.0)
    assert status.state == "failed" and "credentials rejected" in (status.last_error or "")
    assert status.retry_in == pytest.approx(1800.0)
    reg.handle_timer(1800.0)
    assert state_of(reg) is RegState.REGISTERING and len(reg.take_requests()) == 1


def test_fresh_nonce_every_time_is_bounded() -> None:
    reg = client()
    reg.start(0.0)
    for n in range(10):
        out = reg.take_requests()
        if not out:
            break
        response = make_response(out[0].request, 401, to_tag="x")
        response.headers.add("WWW-Authenticate", f'Digest realm="r", nonce="n{n}"')
        reg.receive_response(response, 0.0)
    assert state_of(reg) is RegState.FAILED


def test_423_uses_min_expires() -> None:
    reg = client(expires=60)
    reg.start(0.0)
    request = one(reg).request
    brief = make_response(request, 423, to_tag="x")
    brief.headers.add("Min-Expires", "600")
    reg.receive_response(brief, 0.0)
    retry = one(reg).request
    assert retry.headers.get("Expires") == "600"
    assert retry.cseq.number == request.cseq.number + 1
    # A Min-Expires that is no larger than ours is not a usable answer.
    brief = make_response(retry, 423, to_tag="x")
    brief.headers.add("Min-Expires", "30")
    reg.receive_response(brief, 0.0)
    assert state_of(reg) is RegState.FAILED


def test_failover_then_backoff_with_cap() -> None:
    reg = client(backoff_initial=2.0, backoff_max=10.0)
    reg.start(0.0)
    call_ids = set()
    now = 0.0
    delays = []
    for _round in range(5):
        for host in HOSTS:
            item = one(reg)
            assert item.destination == host
            call_ids.add(item.request.call_id)
            if host == HOSTS[1]:
                reg.request_failed(item.request, "timeout", now)
            else:
                reg.receive_response(make_response(item.request, 503, to_tag="x"), now)
        assert state_of(reg) is RegState.BACKOFF
        timer = reg.next_timeout()
        assert timer is not None
        delays.append(timer - now)
        now = timer
        reg.handle_timer(now)
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert len(call_ids) >= 3  # a new Call-ID per registrar
    status = reg.status(now)
    assert status.failures == 15 and "dallas.voip.ms:5080" in (status.last_error or "")


def test_retry_after_and_jitter() -> None:
    reg = RegistrationClient(
        RegistrationConfig(hosts=HOSTS[:1], username="u", password="p", backoff_max=300.0),
        LOCAL,
        rng=random.Random(7),
    )
    reg.start(0.0)
    busy = make_response(one(reg).request, 503, to_tag="x")
    busy.headers.add("Retry-After", "120")
    reg.receive_response(busy, 0.0)
    assert reg.next_timeout() == pytest.approx(120.0)
    reg.handle_timer(120.0)
    reg.receive_response(make_response(one(reg).request, 500, to_tag="x"), 120.0)
    timer = reg.next_timeout()
    assert timer is not None and 120.0 + 4 * 0.8 <= timer <= 124.0


def test_success_on_second_host_resets_and_recovers() -> None:
    reg = client()
    registrar = Registrar()
    reg.start(0.0)
    reg.request_failed(one(reg).request, "transport error", 0.0)
    exchange(reg, registrar, 1.0)
    assert state_of(reg) is RegState.REGISTERED and reg.host == HOSTS[1]
    assert str(registrar.seen[0].uri) == "sip:chicago.voip.ms"
    # A stale or mismatched response is ignored.
    stray = make_response(registrar.seen[0], 500, to_tag="x")
    reg.receive_response(stray, 2.0)
    assert state_of(reg) is RegState.REGISTERED


def test_unregister() -> None:
    reg = client()
    registrar = Registrar()
    reg.start(0.0)
    exchange(reg, registrar, 0.0)
    reg.unregister(5.0)
    assert state_of(reg) is RegState.UNREGISTERING and reg.next_timeout() is None
    item = one(reg)
    assert item.request.headers.get("Expires") == "0"
    reg.receive_response(registrar.answer(item.request, 5.0), 5.0)
    assert state_of(reg) is RegState.IDLE and reg.status(5.0).expires_in is None
    # Unregistering while backing off just stops.
    reg2 = client()
    reg2.start(0.0)
    for _ in HOSTS:
        reg2.request_failed(one(reg2).request, "timeout", 0.0)
    assert state_of(reg2) is RegState.BACKOFF
    reg2.unregister(1.0)
    assert state_of(reg2) is RegState.IDLE and reg2.take_requests() == []
    assert reg2.next_timeout() is None


def test_nat_contact_correction_and_tcp() -> None:
    reg = client(transport=Transport.TCP, contact_user="trk_abc")
    reg.start(0.0)
    item = one(reg)
    assert item.transport is Transport.TCP
    assert item.request.top_via.transport == "TCP"
    assert str(reg.contact.uri) == "sip:trk_abc@192.0.2.10:5062;transport=tcp"
    ok = make_response(item.request, 200, to_tag="x", source=("203.0.113.9", 40000))
    ok.headers.add("Expires", "300")
    reg.receive_response(ok, 0.0)
    again = one(reg).request
    assert "203.0.113.9:40000" in (again.headers.get("Contact") or "")
    final = make_response(again, 200, to_tag="x", source=("203.0.113.9", 40000))
    final.headers.add("Expires", "300")
    reg.receive_response(final, 0.1)
    assert state_of(reg) is RegState.REGISTERED


def test_password_not_in_repr() -> None:
    config = RegistrationConfig(hosts=HOSTS, username="u", password="zz-hidden")
    assert "zz-hidden" not in repr(config)
    assert "zz-hidden" not in repr(RegistrationClient(config, LOCAL).__dict__)
