"""REGISTER client (RFC 3261 §10) for trunk registrations, sans-IO.

One :class:`RegistrationClient` keeps one binding alive at a provider (e.g. a
voip.ms POP).  It never touches a socket or a clock: it builds REGISTER
requests for the driver to send through a client transaction, is fed the
final responses (or the transaction's timeout / transport failure), and
says when it wants :meth:`handle_timer` next::

    client = RegistrationClient(config, local=("192.0.2.10", 5060))
    client.start(now)
    for out in client.take_requests():            # RegisterRequest(request, destination)
        layer.send_request(out.request, resolve(out.destination), out.transport, now)
    client.receive_response(final_response, now)  # 200 / 401 / 407 / 423 / 5xx ...
    client.request_failed(request, "timeout", now)  # timer F or transport error
    client.next_timeout(); client.handle_timer(now)
    client.status(now)                            # for the API and /system/status
    client.unregister(now)                        # REGISTER with Expires: 0

Behaviour:

* 401/407 are answered with digest credentials (MD5 or SHA-256); a second
  challenge in a row (not ``stale``) means the credentials are wrong: the
  client goes to ``failed`` and retries only after ``failed_retry`` seconds,
  because providers ban addresses that keep failing authentication.  The
  last challenge is reused for refreshes so a refresh costs one round trip.
* 200: the granted lifetime is our Contact's ``expires`` parameter, else the
  Expires header, else what we asked for; the binding is refreshed after
  ``refresh_fraction`` (80 %) of it.
* 423 Interval Too Brief: retry at once with the registrar's Min-Expires.
* 408/5xx/6xx, a timeout or a transport error fail over to the next host
  (with a new Call-ID: it is a different registrar); when every host failed
  in a row, back off exponentially (``backoff_initial`` doubling up to
  ``backoff_max``, at least a 503's Retry-After) and start again from the
  first host, which is the preferred one.
* 403/404 and other 4xx are permanent for now: ``failed``.

The state machine is :data:`TRANSITIONS`; inputs missing from it are ignored.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Final

import msgspec

from voxgate.sip.digest import DigestChallenge, DigestClient, select_challenge
from voxgate.sip.errors import DigestError, SipParseError, SipUsageError
from voxgate.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    new_branch,
    new_call_id,
    new_tag,
)
from voxgate.sip.transaction import Address, Transport
from voxgate.sip.uri import SipUri, format_host

__all__ = [
    "TRANSITIONS",
    "RegInput",
    "RegState",
    "RegisterRequest",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationStatus",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"
# Refuse absurd Min-Expires so a hostile registrar cannot park us for years.
MAX_EXPIRES: Final = 86400
# A registrar that keeps issuing fresh nonces to wrong credentials must not
# keep us in a loop: this many challenges in a row count as a rejection.
MAX_CHALLENGES: Final = 4


class RegState(enum.Enum):
    """Where a registration stands; the values are what the API shows."""

    IDLE = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKOFF = "backoff"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


class RegInput(enum.Enum):
    """What can happen to a registration."""

    START = "start"
    OK = "2xx"
    CHALLENGE = "401/407"
    TOO_BRIEF = "423"
    HOST_FAILED = "host-failed"  # another host remains in this round
    ALL_HOSTS_FAILED = "all-hosts-failed"
    REJECTED = "rejected"  # wrong credentials, 403, other 4xx
    REFRESH_DUE = "refresh-due"
    RETRY_DUE = "retry-due"
    STOP = "stop"  # unregister with a live binding
    STOP_IDLE = "stop-idle"  # unregister with nothing bound


_S = RegState
_I = RegInput

TRANSITIONS: Final[dict[tuple[RegState, RegInput], RegState]] = {
    (_S.IDLE, _I.START): _S.REGISTERING,
    (_S.REGISTERING, _I.OK): _S.REGISTERED,
    (_S.REGISTERING, _I.CHALLENGE): _S.REGISTERING,
    (_S.REGISTERING, _I.TOO_BRIEF): _S.REGISTERING,
    (_S.REGISTERING, _I.HOST_FAILED): _S.REGISTERING,
    (_S.REGISTERING, _I.ALL_HOSTS_FAILED): _S.BACKOFF,
    (_S.REGISTERING, _I.REJECTED): _S.FAILED,
    (_S.REGISTERED, _I.REFRESH_DUE): _S.REGISTERING,
    (_S.BACKOFF, _I.RETRY_DUE): _S.REGISTERING,
    (_S.FAILED, _I.RETRY_DUE): _S.REGISTERING,
    (_S.REGISTERED, _I.START): _S.REGISTERING,
    (_S.BACKOFF, _I.START): _S.REGISTERING,
    (_S.FAILED, _I.START): _S.REGISTERING,
    (_S.REGISTERED, _I.STOP): _S.UNREGISTERING,
    (_S.REGISTERING, _I.STOP): _S.UNREGISTERING,
    (_S.REGISTERING, _I.STOP_IDLE): _S.IDLE,
    (_S.BACKOFF, _I.STOP_IDLE): _S.IDLE,
    (_S.FAILED, _I.STOP_IDLE): _S.IDLE,
    (_S.UNREGISTERING, _I.CHALLENGE): _S.UNREGISTERING,
    (_S.UNREGISTERING, _I.OK): _S.IDLE,
    (_S.UNREGISTERING, _I.REJECTED): _S.IDLE,
    (_S.UNREGISTERING, _I.HOST_FAILED): _S.IDLE,
    (_S.UNREGISTERING, _I.ALL_HOSTS_FAILED): _S.IDLE,
}


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """One account at one provider; ``hosts`` are tried in order."""

    hosts: tuple[Address, ...]
    username: str
    password: str = field(repr=False)
    transport: Transport = Transport.UDP
    expires: int = 3600
    # AOR domain; None uses the registrar host itself (what voip.ms expects).
    domain: str | None = None
    # Contact user part; inbound INVITEs from the provider carry it in the Request-URI.
    contact_user: str | None = None
    user_agent: str = "voxgate"
    refresh_fraction: float = 0.8
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    failed_retry: float = 1800.0

    def __post_init__(self) -> None:
        if not self.hosts:
            raise SipUsageError("a registration needs at least one host")
        if not 0 < self.refresh_fraction < 1:
            raise SipUsageError("refresh_fraction must be between 0 and 1")
        if not 1 <= self.expires <= MAX_EXPIRES:
            raise SipUsageError(f"expires must be 1..{MAX_EXPIRES}")


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A REGISTER for the driver to send in a new client transaction."""

    request: SipRequest
    destination: Address  # host name or IP, resolved by the driver
    transport: Transport


class RegistrationStatus(msgspec.Struct, kw_only=True):
    """What the API shows about one registration at a given moment."""

    state: str
    host: str | None
    expires_in: float | None
    retry_in: float | None
    last_error: str | None
    failures: int
    registrations: int


def _addr_text(addr: Address) -> str:
    host, port = addr
    return f"{format_host(host)}:{port}"


class RegistrationClient:
    """Keeps one registration alive; see the module docstring."""

    def __init__(
        self,
        config: RegistrationConfig,
        local: Address,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._local = local
        self._rng = rng
        self._digest = DigestClient(config.username, config.password)
        self._state = RegState.IDLE
        self._host_index = 0
        self._round_failures = 0
        self._backoff_rounds = 0
        self._expires = config.expires
        self._call_id = new_call_id()
        self._from_tag = new_tag()
        self._cseq = 0
        self._pending: SipRequest | None = None
        self._challenge: tuple[str, DigestChallenge] | None = None  # (header name, challenge)
        self._challenges_in_row = 0
        self._outgoing: list[RegisterRequest] = []
        self._timer: float | None = None
        self._bound_until: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._registrations = 0
        self._contact_host: Address = local
        self._nat_checked = False

    # ------------------------------------------------------------------ inspection

    @property
    def state(self) -> RegState:
        return self._state

    @property
    def host(self) -> Address:
        """The registrar currently used."""
        return self.config.hosts[self._host_index]

    @property
    def contact(self) -> NameAddr:
        """Our Contact as registered (after any NAT correction)."""
        host, port = self._contact_host
        params: dict[str, str | None] = {}
        if self.config.transport is not Transport.UDP:
            params["transport"] = self.config.transport.value.lower()
        user = self.config.contact_user or self.config.username
        return NameAddr(SipUri(host=host, user=user, port=port, params=params))

    def status(self, now: float) -> RegistrationStatus:
        """A snapshot for status pages; times are seconds from ``now``."""
        bound = self._bound_until
        return RegistrationStatus(
            state=self._state.value,
            host=_addr_text(self.host),
            expires_in=max(0.0, bound - now) if bound is not None and bound > now else None,
            retry_in=(
                max(0.0, self._timer - now)
                if self._timer is not None and self._state in (_S.BACKOFF, _S.FAILED)
                else None
            ),
            last_error=self._last_error,
            failures=self._failures,
            registrations=self._registrations,
        )

    def take_requests(self) -> list[RegisterRequest]:
        """Requests to send since the last call, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None."""
        return self._timer

    # ------------------------------------------------------------------ commands

    def start(self, now: float) -> None:
        """Register now (also forces an early refresh or ends a backoff)."""
        if self._fire(_I.START):
            self._round_failures = 0
            self._send(now)

    def unregister(self, now: float) -> None:
        """Remove the binding (REGISTER with Expires: 0) or just stop trying."""
        bound = self._bound_until is not None and self._bound_until > now
        if self._state in (_S.REGISTERED, _S.REGISTERING) and bound:
            self._fire(_I.STOP)
            self._timer = None
            self._send(now, expires=0)
        elif self._fire(_I.STOP_IDLE):
            self._timer = None
            self._pending = None
            self._bound_until = None

    def handle_timer(self, now: float) -> None:
        """Run the refresh or retry that is due at ``now``."""
        if self._timer is None or now < self._timer:
            return
        self._timer = None
        if self._state is _S.REGISTERED:
            self._fire(_I.REFRESH_DUE)
            self._round_failures = 0
            self._send(now)
        elif self._state in (_S.BACKOFF, _S.FAILED):
            self._fire(_I.RETRY_DUE)
            self._round_failures = 0
            self._host_index = 0
            self._new_call()
            self._send(now)

    # ------------------------------------------------------------------ feedback

    def receive_response(self, response: SipResponse, now: float) -> None:
        """Feed the final response to our latest REGISTER; others are ignored."""
        pending = self._pending
        if pending is None or response.status < 200 or not self._matches(pending, response):
            return
        self._pending = None
        status = response.status
        if status not in (401, 407):
            self._challenges_in_row = 0
        if 200 <= status < 300:
            self._on_ok(response, now)
        elif status in (401, 407):
            self._on_challenge(pending, response, now)
        elif status == 423:
            self._on_too_brief(response, now)
        elif status == 408 or status >= 500:
            self._host_failed(f"{status} {response.reason}", now, _retry_after(response))
        else:
            self._rejected(f"{status} {response.reason}", now)

    def request_failed(self, request: SipRequest, reason: str, now: float) -> None:
        """Our REGISTER got no answer (timer F) or could not be sent."""
        if self._pending is None or request is not self._pending:
            return
        self._pending = None
        self._challenges_in_row = 0
        self._host_failed(reason, now, None)

    # ------------------------------------------------------------------ internals

    def _fire(self, inp: RegInput) -> bool:
        target = TRANSITIONS.get((self._state, inp))
        if target is None:
            return False
        self._state = target
        return True

    @staticmethod
    def _matches(request: SipRequest, response: SipResponse) -> bool:
        try:
            cseq = response.cseq
            return (
                response.call_id == request.call_id
                and cseq.method == "REGISTER"
                and cseq.number == request.cseq.number
            )
        except SipParseError:
            return False

    def _new_call(self) -> None:
        # A different registrar is a new registration: new Call-ID, no old nonce.
        self._call_id = new_call_id()
        self._challenge = None
        self._nat_checked = False
        self._contact_host = self._local

    def _domain(self) -> str:
        return self.config.domain or self.host[0]

    def _send(self, now: float, *, expires: int | None = None) -> None:
        del now  # requests carry no time; the transaction layer times them
        host, port = self.host
        domain = self._domain()
        self._cseq += 1
        transport = self.config.transport
        local_host, local_port = self._local
        via = Via(transport.value, local_host, local_port, {"branch": new_branch(), "rport": None})
        aor = SipUri(host=domain, user=self.config.username)
        ruri = SipUri(host=domain, port=None if port == 5060 or self.config.domain else port)
        headers = Headers()
        headers.add("Via", str(via))
        headers.add("Max-Forwards", "70")
        headers.add("From", str(NameAddr(aor, params={"tag": self._from_tag})))
        headers.add("To", str(NameAddr(aor)))
        headers.add("Call-ID", self._call_id)
        headers.add("CSeq", f"{self._cseq} REGISTER")
        headers.add("Contact", str(self.contact))
        headers.add("Expires", str(self._expires if expires is None else expires))
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", self.config.user_agent)
        request = SipRequest("REGISTER", ruri, headers)
        if self._challenge is not None:
            name, challenge = self._challenge
            value = self._digest.authorize(challenge, "REGISTER", str(ruri))
            headers.add(name, value)
        self._pending = request
        self._outgoing.append(RegisterRequest(request, (host, port), transport))

    def _on_ok(self, response: SipResponse, now: float) -> None:
        if self._state is _S.UNREGISTERING:
            self._fire(_I.OK)
            self._bound_until = None
            self._last_error = None
            return
        granted = self._granted(response)
        if granted <= 0:
            self._host_failed("registrar granted no lifetime", now, None)
            return
        if self._nat_rewrite(response):
            # Our public address differs from the Contact we sent: bind that one.
            self._send(now)
            return
        self._fire(_I.OK)
        self._bound_until = now + granted
        self._timer = now + granted * self.config.refresh_fraction
        self._round_failures = 0
        self._backoff_rounds = 0
        self._last_error = None
        self._registrations += 1

    def _granted(self, response: SipResponse) -> int:
        ours = self.contact.sip_uri
        try:
            contacts = response.contacts
        except SipParseError:
            contacts = []
        for contact in contacts:
            uri = contact.uri
            if (
                isinstance(uri, SipUri)
                and uri.user == ours.user
                and uri.host.lower() == ours.host.lower()
                and (uri.port or 5060) == (ours.port or 5060)
            ):
                value = contact.params.get("expires")
                if value is not None and value.isdigit():
                    return min(int(value), MAX_EXPIRES)
        try:
            header = response.expires
        except SipParseError:
            header = None
        if header is not None:
            return min(header, MAX_EXPIRES)
        return self._expires

    def _nat_rewrite(self, response: SipResponse) -> bool:
        if self._nat_checked:
            return False
        self._nat_checked = True
        try:
            via = response.top_via
        except SipParseError:
            return False
        public_host = via.received or self._contact_host[0]
        public_port = via.rport or self._contact_host[1]
        if (public_host, public_port) == self._contact_host:
            return False
        self._contact_host = (public_host, public_port)
        return True

    def _on_challenge(self, request: SipRequest, response: SipResponse, now: float) -> None:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            challenge = select_challenge(response.headers.get_all(header))
        except (DigestError, SipParseError) as exc:
            self._rejected(f"{response.status} with an unusable challenge: {exc}", now)
            return
        sent_credentials = answer in request.headers
        self._challenges_in_row += 1
        # Credentials computed from a challenge of this very exchange were refused
        # (a provider issuing a fresh nonce per 401 included): they are wrong.
        # ``stale`` means right credentials on an old nonce: answer again, bounded.
        refused = self._challenges_in_row >= 2 and not challenge.stale
        if sent_credentials and (refused or self._challenges_in_row >= MAX_CHALLENGES):
            self._rejected(f"{response.status} {response.reason}: credentials rejected", now)
            return
        if not self._fire(_I.CHALLENGE):
            return
        self._challenge = (answer, challenge)
        self._send(now, expires=0 if self._state is _S.UNREGISTERING else None)

    def _on_too_brief(self, response: SipResponse, now: float) -> None:
        value = (response.headers.get("Min-Expires") or "").strip()
        minimum = int(value) if value.isdigit() and len(value) <= 10 else 0
        if self._state is _S.UNREGISTERING or not self._expires < minimum <= MAX_EXPIRES:
            self._rejected(f"423 with unusable Min-Expires {value!r}", now)
            return
        self._fire(_I.TOO_BRIEF)
        self._expires = minimum
        self._send(now)

    def _host_failed(self, reason: str, now: float, retry_after: float | None) -> None:
        self._last_error = f"{_addr_text(self.host)}: {reason}"
        self._failures += 1
        self._round_failures += 1
        hosts = len(self.config.hosts)
        if self._state is not _S.UNREGISTERING and self._round_failures < hosts:
            self._fire(_I.HOST_FAILED)
            self._host_index = (self._host_index + 1) % hosts
            self._new_call()
            self._send(now)
            return
        if not self._fire(_I.ALL_HOSTS_FAILED):
            return
        if self._state is _S.IDLE:
            self._bound_until = None
            return
        self._backoff_rounds += 1
        delay = min(
            self.config.backoff_initial * 2 ** (self._backoff_rounds - 1), self.config.backoff_max
        )
        if self._rng is not None:
            # Spread retries of many trunks so a provider outage's end is not a stampede.
            delay *= self._rng.uniform(0.8, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.backoff_max))
        self._timer = now + delay

    def _rejected(self, reason: str, now: float) -> None:
        self._last_error = f"{_addr_text(self.host)}: {reason}"
        self._failures += 1
        if not self._fire(_I.REJECTED):
            return
        if self._state is _S.IDLE:
            self._bound_until = None
            return
        self._challenge = None
        self._timer = now + self.config.failed_retry


def _retry_after(response: SipResponse) -> float | None:
    value = (response.headers.get("Retry-After") or "").split(";", 1)[0].strip()
    return float(value) if value.isdigit() and len(value) <= 6 else None
