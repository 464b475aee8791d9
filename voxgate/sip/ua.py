"""The SIP user agent core: transactions + dialogs + transports, for calls in and out.

:class:`UserAgent` feeds every received message to its
:class:`~voxgate.sip.transaction.TransactionLayer`, turns the layer's events
into UAS/UAC behaviour, sends what the layer produces, and keeps *one* timer
handle armed at the layer's ``next_timeout()``.  It owns the rules of RFC 3261
§8.2 and §12-15 that sit above transactions:

* UAS: ``405`` (with Allow) for methods we know but do not serve, ``501`` for
  unknown ones, ``416`` for a Request-URI that is not ``sip:``/``sips:``,
  ``420`` (with Unsupported) for a Require we lack, ``415`` (with Accept) for a
  body that is not SDP (or ``application/dtmf-relay`` in INFO), ``406`` when
  Accept rules out SDP, ``481`` for in-dialog requests of unknown dialogs,
  ``488`` (left to the handler, which runs SDP offer/answer), OPTIONS -> 200;
  CANCEL -> 487 for the INVITE; re-INVITE (hold/unhold) answered through the
  session's listener; INFO DTMF (``application/dtmf-relay``/``application/dtmf``);
  BYE -> 200.  ``100 Trying`` comes from the transaction layer.
* New INVITEs go to an :class:`InviteHandler` as an :class:`IncomingInvite`
  (``ring``/``answer``/``reject``); the handler is a coroutine because routing
  reads the store.  A handler that returns without a final answer yields 500.
* UAC: :meth:`UserAgent.invite` sends an INVITE, answers 401/407 digest
  challenges once per nonce, ACKs the 2xx and returns a :class:`Session`;
  :meth:`UserAgent.send_request` runs any prebuilt non-INVITE request (a
  REGISTER, say) in a client transaction and returns its final response.
* Transfers (RFC 3515): :meth:`Session.refer` sends an in-dialog REFER and
  waits for ``202``, then follows the implicit subscription's NOTIFYs
  (``message/sipfrag``) until the referred call's outcome is known.  We do not
  act on REFERs *from* peers: a transfer of our agent's call is decided by
  the flow, not by the far end, so an in-dialog REFER is declined (``603``)
  and an out-of-dialog one refused (``403``).

A :class:`Session` is one confirmed call dialog (either direction); its
:class:`SessionListener` hears re-offers, DTMF and the end of the call, and
:meth:`Session.hangup` sends BYE.  Timestamps are the loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from voxgate.sip.dialog import Dialog, DialogTable
from voxgate.sip.digest import DigestClient, select_challenge
from voxgate.sip.errors import DigestError, SipParseError, SipUsageError
from voxgate.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
)
from voxgate.sip.sdp import SdpError, SessionDescription, parse_sdp
from voxgate.sip.transaction import (
    Address,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    Transaction,
    TransactionLayer,
    TransactionTimeout,
    Transport,
    TransportError,
    TxInput,
    TxKind,
)
from voxgate.sip.transport import SipTransports
from voxgate.sip.uri import SipUri, Uri

__all__ = [
    "ALLOWED_METHODS",
    "CallCancelled",
    "CallFailed",
    "IncomingInvite",
    "InviteHandler",
    "OutboundInvite",
    "ReferFailed",
    "Session",
    "SessionEnd",
    "SessionListener",
    "UserAgent",
    "parse_dtmf_info",
    "parse_sipfrag_status",
]

log = logging.getLogger(__name__)

ALLOWED_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REFER", "NOTIFY")
_ALLOW: Final = ", ".join(ALLOWED_METHODS)
# Methods we recognise but do not serve: 405 (with Allow) rather than 501.
_KNOWN_METHODS: Final = frozenset(
    {"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "UPDATE", "PRACK"}
)
_SUPPORTED_EXTENSIONS: Final[frozenset[str]] = frozenset()
_SDP: Final = "application/sdp"
_DTMF_TYPES: Final = frozenset({"application/dtmf-relay", "application/dtmf"})
_DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


class SessionEnd(enum.Enum):
    """Why a session (call dialog) ended."""

    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    NO_ACK = "no_ack"  # our 2xx was never acknowledged (timer L/H)
    FAILED = "failed"  # transport error or 408/481 on an in-dialog request
    SHUTDOWN = "shutdown"


class CallFailed(Exception):
    """An outbound INVITE ended without a 2xx (``status`` 408 for a timeout)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class CallCancelled(Exception):
    """The caller cancelled the INVITE before we answered."""


class ReferFailed(Exception):
    """A transfer did not happen: the REFER was refused, or the referred call failed.

    ``status`` is the REFER's final status, or the sipfrag status of the last
    NOTIFY (``408`` when no outcome arrived in time).
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def parse_sipfrag_status(body: bytes) -> tuple[int, str] | None:
    """``(status, reason)`` from a ``message/sipfrag`` status line (``SIP/2.0 200 OK``)."""
    line = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0" or len(code) != 3 or not code.isdigit():
        return None
    status = int(code)
    if not 100 <= status <= 699:
        return None
    return status, reason.strip()[:128]


class SessionListener(Protocol):
    """What a call's media side hears from signalling."""

    def session_confirmed(self, session: Session) -> None:
        """The 2xx was acknowledged (UAS) / sent ACK (UAC): media may flow both ways."""

    def session_reoffer(self, session: Session, offer: SessionDescription) -> bytes:
        """A re-INVITE offer (hold/unhold); return the SDP answer.

        Raise :class:`~voxgate.sip.sdp.NoCommonCodec` to answer 488.
        """
        ...

    def session_dtmf(self, session: Session, digit: str, duration: float) -> None:
        """A key press sent as SIP INFO."""

    def session_ended(self, session: Session, reason: SessionEnd) -> None:
        """The dialog is over; called exactly once."""


class InviteHandler(Protocol):
    """Decides what to do with a new incoming call."""

    async def handle_invite(self, invite: IncomingInvite) -> None: ...


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, float] | None:
    """``(digit, seconds)`` from an INFO body (``Signal=5`` / ``Duration=160`` ms), else None."""
    text = body.decode("utf-8", "replace")
    digit: str | None = None
    duration = 0.0
    if content_type == "application/dtmf":
        digit = text.strip()[:1] or None
    else:
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "signal":
                digit = value[:1].upper() if value else None
            elif name == "duration" and value.isdigit():
                duration = min(int(value), 60_000) / 1000.0
    if digit is None or digit not in _DTMF_DIGITS:
        return None
    return digit, duration


def _content_type(message: SipRequest | SipResponse) -> str | None:
    value = message.content_type
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower()


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _uri_address(uri: Uri, transport: Transport) -> Address | None:
    """The socket address of a SIP URI with an IP literal host (no DNS here)."""
    if not isinstance(uri, SipUri) or not _ip_literal(uri.host):
        return None
    default = 5061 if uri.scheme == "sips" or transport is Transport.TLS else 5060
    return uri.host.strip("[]"), uri.port if uri.port is not None else default


@dataclass(eq=False)
class Session:
    """One call dialog, inbound or outbound, once a 2xx went out / came in."""

    ua: UserAgent
    dialog: Dialog
    transport: Transport
    remote: Address  # where in-dialog requests go (Contact, else the source)
    listener: SessionListener
    call_id: str
    outbound: bool
    invite: SipRequest
    remote_sdp: bytes = b""
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_reason: SessionEnd | None = None
    # sipfrag statuses of the NOTIFYs of our REFER's implicit subscription
    refer_progress: list[tuple[int, str]] = field(default_factory=list)
    refer_changed: asyncio.Event = field(default_factory=asyncio.Event)
    # the INVITE server transaction whose 2xx awaits its ACK (UAS only)
    _invite_tx: Transaction | None = None

    @property
    def is_ended(self) -> bool:
        """True once the session is over."""
        return self.end_reason is not None

    async def hangup(self) -> SipResponse | None:
        """Send BYE (if the dialog is still up) and wait for its answer.

        The session ends at once (§15.1.1); the wait is bounded by the BYE's
        transaction timeout (a synthetic 408).  None when nothing was sent.
        """
        if self.is_ended:
            return None
        return await self.ua._send_bye(self)

    async def refer(
        self,
        target: Uri,
        *,
        referred_by: NameAddr | None = None,
        outcome_timeout: float | None = 30.0,
    ) -> int:
        """Blind-transfer the peer to ``target`` (RFC 3515); returns the outcome status.

        Waits for the REFER's ``202``, then (unless ``outcome_timeout`` is
        None) for a NOTIFY whose sipfrag is final: a 2xx there is returned; a
        failure there, a REFER refused, or no outcome in time raises
        :class:`ReferFailed`.  The dialog stays up either way: hanging up
        after a successful transfer is the caller's choice.
        """
        if self.is_ended:
            raise ReferFailed(481, "Call Does Not Exist")
        self.refer_progress.clear()
        self.refer_changed.clear()
        via = self.ua.new_via(self.transport)
        try:
            request = self.dialog.create_refer(target, via, referred_by=referred_by)
        except SipUsageError as exc:
            raise ReferFailed(481, str(exc)) from None
        request.headers.add("User-Agent", self.ua.user_agent)
        response = await self.ua.send_request(request, self.remote, self.transport)
        self.dialog.receive_response(response)
        if not 200 <= response.status < 300:
            raise ReferFailed(response.status, response.reason)
        if outcome_timeout is None:
            return response.status
        try:
            async with asyncio.timeout(outcome_timeout):
                while True:
                    final = [p for p in self.refer_progress if p[0] >= 200]
                    if final:
                        status, reason = final[-1]
                        if status >= 300:
                            raise ReferFailed(status, reason)
                        return status
                    if self.ended.is_set():
                        # The peer hung up after accepting: the transfer went ahead.
                        return response.status
                    self.refer_changed.clear()
                    ended = asyncio.ensure_future(self.ended.wait())
                    changed = asyncio.ensure_future(self.refer_changed.wait())
                    try:
                        await asyncio.wait({ended, changed}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        ended.cancel()
                        changed.cancel()
        except TimeoutError:
            raise ReferFailed(408, "No Transfer Outcome") from None

    def _finish(self, reason: SessionEnd) -> None:
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self.ended.set()
        self.ua._forget(self)
        try:
            self.listener.session_ended(self, reason)
        except Exception:
            log.exception("session listener failed on end of %s", self.call_id)


@dataclass(eq=False)
class IncomingInvite:
    """A new INVITE awaiting the handler's decision."""

    ua: UserAgent
    request: SipRequest
    transaction: Transaction
    source: Address
    transport: Transport
    offer: SessionDescription | None
    local_tag: str = field(default_factory=new_tag)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    answered: bool = False

    @property
    def is_cancelled(self) -> bool:
        """True once the caller sent CANCEL (we answered 487 already)."""
        return self.cancelled.is_set()

    @property
    def called_user(self) -> str | None:
        """The Request-URI user part (the dialled number), else the To user."""
        uri = self.request.uri
        if isinstance(uri, SipUri) and uri.user:
            return uri.user
        to = self.request.to_addr.uri
        return to.user if isinstance(to, SipUri) else None

    @property
    def caller_user(self) -> str:
        """The From user (caller id) or an empty string."""
        uri = self.request.from_addr.uri
        return (uri.user or "") if isinstance(uri, SipUri) else ""

    def _live(self) -> bool:
        return not self.answered and not self.is_cancelled

    def ring(self) -> None:
        """Send 180 Ringing (with our To tag)."""
        if self._live():
            response = make_response(self.request, 180, to_tag=self.local_tag)
            self.ua._respond(self.transaction, response, contact=True)

    def reject(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Send a final error response (e.g. 404, 403, 486, 488, 503 + Retry-After)."""
        if not self._live():
            return
        self.answered = True
        response = make_response(self.request, status, reason, to_tag=self.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.ua._respond(self.transaction, response)

    def answer(self, sdp: bytes, listener: SessionListener) -> Session:
        """Send 200 OK with our SDP answer; the session is confirmed when the ACK arrives."""
        if self.is_cancelled:
            raise CallCancelled(self.request.call_id)
        if self.answered:
            raise SipUsageError("INVITE already answered")
        return self.ua._answer(self, sdp, listener)


class OutboundInvite:
    """An INVITE we sent, until it is answered, fails or is cancelled."""

    def __init__(self, ua: UserAgent, request: SipRequest, transaction: Transaction) -> None:
        self.ua = ua
        self.request = request
        self.transaction = transaction
        self.result: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.provisional: list[int] = []
        self.ringing = asyncio.Event()
        self.auth_attempts = 0
        self.credentials: DigestClient | None = None

    def cancel(self) -> None:
        """CANCEL the INVITE (sent once a provisional response arrived)."""
        self.ua._cancel(self)


class UserAgent:
    """SIP user agent core over :class:`SipTransports` (see the module docstring)."""

    def __init__(
        self,
        transports: SipTransports,
        handler: InviteHandler,
        *,
        advertised_host: str,
        timers: TimerConfig | None = None,
        user_agent: str = "voxgate",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.transports = transports
        self.handler = handler
        self.advertised_host = advertised_host
        self.user_agent = user_agent
        self.layer = TransactionLayer(timers)
        self.dialogs = DialogTable()
        self._loop = asyncio.get_running_loop()
        self._clock = clock if clock is not None else self._loop.time
        self._by_dialog: dict[object, Session] = {}
        self._pending: dict[Transaction, IncomingInvite] = {}
        self._outbound: dict[Transaction, OutboundInvite] = {}
        self._waiters: dict[Transaction, asyncio.Future[SipResponse]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.stats: dict[str, int] = {"received": 0, "invites": 0, "handler_errors": 0}
        transports.sink = self.receive
        transports.on_failure = self._transport_failed

    # ------------------------------------------------------------------ plumbing

    def now(self) -> float:
        """The monotonic time the transaction layer runs on."""
        return self._clock()

    def receive(self, data: bytes, source: Address, transport: Transport) -> None:
        """One datagram or stream frame from the transports."""
        self.stats["received"] += 1
        self.layer.receive(data, source, transport, self.now())
        self._pump()

    def _pump(self) -> None:
        for _ in range(1000):  # bounded: handling an event may queue more
            events = self.layer.take_events()
            if not events:
                break
            for event in events:
                try:
                    self._on_event(event)
                except SipParseError as exc:
                    # A header only parsed lazily here was bad: the peer's fault.
                    log.info("dropping SIP event on malformed header: %s", exc.reason)
        self.transports.send_outgoing(self.layer.take_outgoing())
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.layer.next_timeout()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.now())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self.now())
        self._pump()

    def _transport_failed(self, destination: Address, transport: Transport) -> None:
        self.layer.transport_failed(destination, self.now())
        self._pump()

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = self._loop.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _local(self, transport: Transport) -> Address:
        bound = self.transports.local_address(transport)
        if bound is None:
            raise SipUsageError(f"no {transport.value} listener")
        return self.advertised_host, bound[1]

    def contact(self, transport: Transport, user: str = "voxgate") -> NameAddr:
        """Our Contact for ``transport``."""
        host, port = self._local(transport)
        params: dict[str, str | None] = {}
        if transport is not Transport.UDP:
            params["transport"] = transport.value.lower()
        return NameAddr(SipUri(host=host, port=port, user=user, params=params))

    def new_via(self, transport: Transport) -> Via:
        """A Via for a request we send (fresh branch, rport requested)."""
        host, port = self._local(transport)
        return Via(transport.value, host, port, {"branch": new_branch(), "rport": None})

    def _respond(
        self, tx: Transaction, response: SipResponse, *, contact: bool = False, sdp: bytes = b""
    ) -> None:
        if contact:
            response.headers.add("Contact", str(self.contact(tx.transport)))
        if response.status >= 200 or contact:
            response.headers.add("Allow", _ALLOW)
        response.headers.add("Server", self.user_agent)
        if sdp:
            response.headers.add("Content-Type", _SDP)
            response.body = sdp
        try:
            self.layer.send_response(tx, response, self.now())
        except SipUsageError:
            log.debug("response %d not sendable in %s", response.status, tx.state.value)
        self._pump()

    def _reply(
        self,
        tx: Transaction,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        response = make_response(request, status, reason, to_tag=new_tag())
        for name, value in headers:
            response.headers.add(name, value)
        self._respond(tx, response)

    # ------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            if event.transaction is None:
                self._on_ack(event.request)
            else:
                self._on_request(event.request, event.transaction, event.source, event.transport)
        elif isinstance(event, ResponseReceived):
            self._on_response(event)
        elif isinstance(event, CancelReceived):
            self._on_cancel(event.invite)
        elif isinstance(event, TransactionTimeout):
            self._on_timeout(event.transaction, event.timer)
        elif isinstance(event, TransportError):
            self._on_timeout(event.transaction, None)

    def _on_request(
        self, request: SipRequest, tx: Transaction, source: Address, transport: Transport
    ) -> None:
        method = request.method
        if method not in ALLOWED_METHODS:
            if method in _KNOWN_METHODS:
                self._reply(tx, request, 405, headers=[("Allow", _ALLOW)])
            else:
                self._reply(tx, request, 501)
            return
        if not isinstance(request.uri, SipUri):
            self._reply(tx, request, 416)
            return
        unsupported = [
            t for t in request.header_tokens("Require") if t not in _SUPPORTED_EXTENSIONS
        ]
        if unsupported:
            self._reply(tx, request, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "OPTIONS":
            self._on_options(request, tx)
        elif method == "INVITE":
            if request.to_addr.tag:
                self._on_reinvite(request, tx)
            else:
                self._on_invite(request, tx, source, transport)
        elif method == "BYE":
            self._on_bye(request, tx)
        elif method == "INFO":
            self._on_info(request, tx)
        elif method == "REFER":
            self._on_refer(request, tx)
        elif method == "NOTIFY":
            self._on_notify(request, tx)
        # CANCEL never gets here (the layer answers it and emits CancelReceived).

    def _on_options(self, request: SipRequest, tx: Transaction) -> None:
        response = make_response(request, 200, to_tag=new_tag())
        response.headers.add("Accept", _SDP)
        response.headers.add("Supported", "")
        self._respond(tx, response)

    def _accepts_sdp(self, request: SipRequest) -> bool:
        accept = request.header_tokens("Accept")
        if not accept:
            return True
        for item in accept:
            kind = item.split(";", 1)[0].strip().lower()
            if kind in (_SDP, "application/*", "*/*"):
                return True
        return False

    def _offer_of(
        self, request: SipRequest, tx: Transaction
    ) -> tuple[bool, SessionDescription | None]:
        """(ok, offer); when not ok an error answer was sent."""
        if not request.body:
            return True, None
        if _content_type(request) != _SDP:
            self._reply(tx, request, 415, headers=[("Accept", _SDP)])
            return False, None
        encoding = request.headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            self._reply(tx, request, 415, headers=[("Accept-Encoding", "identity")])
            return False, None
        try:
            return True, parse_sdp(request.body)
        except SdpError:
            self._reply(tx, request, 400, "Bad SDP")
            return False, None

    def _on_invite(
        self, request: SipRequest, tx: Transaction, source: Address, transport: Transport
    ) -> None:
        self.stats["invites"] += 1
        if not self._accepts_sdp(request):
            self._reply(tx, request, 406, headers=[("Accept", _SDP)])
            return
        ok, offer = self._offer_of(request, tx)
        if not ok:
            return
        if not request.contacts:
            self._reply(tx, request, 400, "Missing Contact")
            return
        invite = IncomingInvite(self, request, tx, source, transport, offer)
        self._pending[tx] = invite
        self._spawn(self._run_handler(invite))

    async def _run_handler(self, invite: IncomingInvite) -> None:
        try:
            await self.handler.handle_invite(invite)
        except CallCancelled:
            pass
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("INVITE handler failed for %s", invite.request.call_id)
        finally:
            self._pending.pop(invite.transaction, None)
            if not invite.answered and not invite.is_cancelled:
                invite.reject(500, "Server Internal Error")

    def _answer(self, invite: IncomingInvite, sdp: bytes, listener: SessionListener) -> Session:
        request = invite.request
        contact = self.contact(invite.transport)
        try:
            dialog = Dialog.from_incoming_invite(
                request, local_tag=invite.local_tag, local_contact=contact
            )
        except SipParseError as exc:
            invite.reject(400, exc.reason)
            raise CallCancelled(request.call_id) from None
        remote = invite.source
        if not invite.transport.reliable:
            remote = _uri_address(dialog.remote_target, invite.transport) or invite.source
        session = Session(
            ua=self,
            dialog=dialog,
            transport=invite.transport,
            remote=remote,
            listener=listener,
            call_id=request.call_id,
            outbound=False,
            invite=request,
            remote_sdp=request.body,
        )
        session._invite_tx = invite.transaction
        self.dialogs.add(dialog)
        self._by_dialog[dialog.id] = session
        invite.answered = True
        self._pending.pop(invite.transaction, None)
        response = make_response(request, 200, to_tag=invite.local_tag)
        self._respond(invite.transaction, response, contact=True, sdp=sdp)
        return session

    def _on_cancel(self, tx: Transaction) -> None:
        invite = self._pending.pop(tx, None)
        request = tx.request
        if invite is not None:
            if invite.answered:
                return
            invite.cancelled.set()
            tag = invite.local_tag
        else:
            tag = new_tag()
        with contextlib.suppress(SipUsageError):
            self.layer.send_response(tx, make_response(request, 487, to_tag=tag), self.now())

    def _on_ack(self, ack: SipRequest) -> None:
        dialog = self.dialogs.match_request(ack)
        if dialog is None:
            return  # ACK for a failure, or for a dialog long gone: nothing to do
        session = self._by_dialog.get(dialog.id)
        if session is None or session.confirmed.is_set():
            return
        if session._invite_tx is not None and ack.cseq.number != session.invite.cseq.number:
            return
        session._invite_tx = None
        session.confirmed.set()
        try:
            session.listener.session_confirmed(session)
        except Exception:
            log.exception("session listener failed on confirm of %s", session.call_id)

    def _in_dialog(self, request: SipRequest, tx: Transaction) -> Session | None:
        dialog = self.dialogs.match_request(request)
        session = self._by_dialog.get(dialog.id) if dialog is not None else None
        if session is None or dialog is None or session.is_ended:
            self._reply(tx, request, 481)
            return None
        status = dialog.receive_request(request)
        if status is not None:
            if request.method == "INVITE" and status == 500:
                self._reply(tx, request, 500, headers=[("Retry-After", "1")])
            else:
                self._reply(tx, request, status)
            return None
        return session

    def _on_bye(self, request: SipRequest, tx: Transaction) -> None:
        session = self._in_dialog(request, tx)
        if session is None:
            return
        self._respond(tx, make_response(request, 200))
        session._finish(SessionEnd.REMOTE_BYE)

    def _on_info(self, request: SipRequest, tx: Transaction) -> None:
        session = self._in_dialog(request, tx)
        if session is None:
            return
        kind = _content_type(request)
        if request.body and kind not in _DTMF_TYPES:
            self._reply(tx, request, 415, headers=[("Accept", ", ".join(sorted(_DTMF_TYPES)))])
            return
        self._respond(tx, make_response(request, 200))
        if kind is not None and request.body:
            parsed = parse_dtmf_info(kind, request.body)
            if parsed is not None:
                try:
                    session.listener.session_dtmf(session, parsed[0], parsed[1])
                except Exception:
                    log.exception("session listener failed on DTMF of %s", session.call_id)

    def _on_refer(self, request: SipRequest, tx: Transaction) -> None:
        if not request.to_addr.tag:
            self._reply(tx, request, 403, "Out-of-dialog REFER Not Accepted")
            return
        session = self._in_dialog(request, tx)
        if session is None:
            return
        # Our side of the call is an agent: only its flow may transfer it.
        self._reply(tx, request, 603, "Transfer Declined")

    def _on_notify(self, request: SipRequest, tx: Transaction) -> None:
        session = self._in_dialog(request, tx)
        if session is None:
            return
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            self._reply(tx, request, 489, headers=[("Allow-Events", "refer")])
            return
        self._respond(tx, make_response(request, 200))
        parsed = parse_sipfrag_status(request.body) if request.body else None
        if parsed is None:
            state = (request.headers.get("Subscription-State") or "").strip().lower()
            if not state.startswith("terminated"):
                return
            # The subscription ended without a readable outcome.
            parsed = (500, "Transfer Outcome Unknown")
        session.refer_progress.append(parsed)
        session.refer_changed.set()

    def _on_reinvite(self, request: SipRequest, tx: Transaction) -> None:
        session = self._in_dialog(request, tx)
        if session is None:
            return
        dialog = session.dialog
        try:
            ok, offer = self._offer_of(request, tx)
            if not ok:
                return
            if offer is None:
                # An offerless re-INVITE (session refresh) would need us to
                # offer in the 200; unsupported for now.
                self._reply(tx, request, 488, "Offer Required")
                return
            try:
                answer = session.listener.session_reoffer(session, offer)
            except SdpError:
                self._reply(tx, request, 488)
                return
            response = make_response(request, 200)
            session.remote_sdp = request.body
            self._respond(tx, response, contact=True, sdp=answer)
        finally:
            dialog.invite_answered()

    def _on_timeout(self, tx: Transaction, timer: TxInput | None) -> None:
        if tx.kind is TxKind.INVITE_SERVER:
            # Our 2xx was never ACKed (L) or the transport broke: end the call.
            for session in list(self._by_dialog.values()):
                if (
                    session._invite_tx is tx
                    and not session.is_ended
                    and timer in (TxInput.TIMER_L, TxInput.TIMER_H, None)
                ):
                    self._spawn(self._bye_quietly(session))
                    session._finish(SessionEnd.NO_ACK)
            return
        response = SipResponse(408, "Request Timeout")
        outbound = self._outbound.pop(tx, None)
        if outbound is not None and not outbound.result.done():
            outbound.result.set_exception(CallFailed(408, "Request Timeout"))
        waiter = self._waiters.pop(tx, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    async def _bye_quietly(self, session: Session) -> None:
        with contextlib.suppress(SipUsageError):
            self._send_request_in(session, "BYE")

    # ------------------------------------------------------------------ UAC side

    def _on_response(self, event: ResponseReceived) -> None:
        tx = event.transaction
        response = event.response
        if tx is None:
            return  # stray 2xx for an INVITE we no longer track; the layer re-ACKs known ones
        outbound = self._outbound.get(tx)
        if outbound is not None:
            self._on_invite_response(outbound, response, event.retransmission)
            return
        waiter = self._waiters.get(tx)
        if waiter is not None and response.status >= 200:
            del self._waiters[tx]
            if not waiter.done():
                waiter.set_result(response)

    def _on_invite_response(
        self, outbound: OutboundInvite, response: SipResponse, retransmission: bool
    ) -> None:
        status = response.status
        if status < 200:
            outbound.provisional.append(status)
            if status in (180, 183):
                outbound.ringing.set()
            return
        self._outbound.pop(outbound.transaction, None)
        if retransmission or outbound.result.done():
            return
        if status < 300:
            outbound.result.set_result(response)
            return
        if status in (401, 407) and self._retry_with_auth(outbound, response):
            return
        outbound.result.set_exception(CallFailed(status, response.reason))

    def _retry_with_auth(self, outbound: OutboundInvite, response: SipResponse) -> bool:
        credentials = outbound.credentials
        if credentials is None or outbound.auth_attempts >= 2:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            challenge = select_challenge(response.headers.get_lines(header))
        except DigestError:
            return False
        old = outbound.request
        headers = old.headers.copy()
        headers.set_all("Via", [str(self.new_via(outbound.transaction.transport))])
        headers.set("CSeq", f"{old.cseq.number + 1} INVITE")
        try:
            headers.set(answer, credentials.authorize(challenge, "INVITE", str(old.uri), old.body))
        except DigestError:
            return False
        request = SipRequest("INVITE", old.uri, headers, old.body)
        tx = self.layer.send_request(
            request, outbound.transaction.remote, outbound.transaction.transport, self.now()
        )
        outbound.request = request
        outbound.transaction = tx
        outbound.auth_attempts += 1
        self._outbound[tx] = outbound
        return True

    def _cancel(self, outbound: OutboundInvite) -> None:
        if outbound.result.done():
            return
        self.layer.cancel(outbound.transaction, self.now())
        self._pump()

    async def invite(
        self,
        target: SipUri,
        destination: Address,
        *,
        sdp: bytes,
        listener: SessionListener,
        transport: Transport = Transport.UDP,
        from_user: str = "voxgate",
        from_display: str | None = None,
        credentials: DigestClient | None = None,
        headers: Iterable[tuple[str, str]] = (),
        answer_timeout: float | None = None,
        on_progress: Callable[[OutboundInvite], None] | None = None,
        to_uri: SipUri | None = None,
    ) -> Session:
        """Call ``target`` via ``destination``; returns the confirmed session.

        ``to_uri`` is the To header's URI when it differs from the
        Request-URI (a call to a registered Contact names the dialled number
        in To).

        Raises :class:`CallFailed` for a final non-2xx answer (408 on timeout;
        the INVITE is cancelled when ``answer_timeout`` passes first).
        """
        host, port = self._local(transport)
        from_uri = SipUri(host=host, port=port, user=from_user)
        h = Headers()
        h.add("Via", str(self.new_via(transport)))
        h.add("Max-Forwards", "70")
        h.add("From", str(NameAddr(from_uri, from_display, {"tag": new_tag()})))
        h.add("To", str(NameAddr(to_uri or target)))
        h.add("Call-ID", new_call_id())
        h.add("CSeq", "1 INVITE")
        h.add("Contact", str(self.contact(transport, from_user)))
        h.add("Allow", _ALLOW)
        h.add("User-Agent", self.user_agent)
        for name, value in headers:
            h.add(name, value)
        h.add("Content-Type", _SDP)
        request = SipRequest("INVITE", target, h, sdp)
        tx = self.layer.send_request(request, destination, transport, self.now())
        outbound = OutboundInvite(self, request, tx)
        outbound.credentials = credentials
        self._outbound[tx] = outbound
        self._pump()
        if on_progress is not None:
            on_progress(outbound)
        try:
            if answer_timeout is None:
                response = await outbound.result
            else:
                response = await asyncio.wait_for(asyncio.shield(outbound.result), answer_timeout)
        except TimeoutError:
            outbound.cancel()
            try:
                response = await asyncio.wait_for(outbound.result, 40 * 0.5)
            except TimeoutError:
                raise CallFailed(408, "Request Timeout") from None
        return self._confirm_outbound(outbound, response, listener, destination)

    def _confirm_outbound(
        self,
        outbound: OutboundInvite,
        response: SipResponse,
        listener: SessionListener,
        destination: Address,
    ) -> Session:
        request = outbound.request
        tx = outbound.transaction
        dialog = Dialog.from_outgoing_invite(request, response)
        ack = dialog.create_ack(request.cseq.number, self.new_via(tx.transport))
        self.layer.send_ack(tx, ack)
        remote = destination
        if not tx.transport.reliable:
            remote = _uri_address(dialog.next_hop(), tx.transport) or destination
        session = Session(
            ua=self,
            dialog=dialog,
            transport=tx.transport,
            remote=remote,
            listener=listener,
            call_id=request.call_id,
            outbound=True,
            invite=request,
            remote_sdp=response.body,
        )
        self.dialogs.add(dialog)
        self._by_dialog[dialog.id] = session
        session.confirmed.set()
        self._pump()
        try:
            listener.session_confirmed(session)
        except Exception:
            log.exception("session listener failed on confirm of %s", session.call_id)
        return session

    def _send_request_in(
        self,
        session: Session,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Transaction:
        via = self.new_via(session.transport)
        request = session.dialog.create_request(
            method, via, body=body, content_type=content_type, headers=headers
        )
        request.headers.add("User-Agent", self.user_agent)
        tx = self.layer.send_request(request, session.remote, session.transport, self.now())
        self._pump()
        return tx

    async def _send_bye(self, session: Session) -> SipResponse | None:
        try:
            tx = self._send_request_in(session, "BYE")
        except SipUsageError:
            session._finish(SessionEnd.LOCAL_BYE)
            return None
        waiter: asyncio.Future[SipResponse] = self._loop.create_future()
        self._waiters[tx] = waiter
        session._finish(SessionEnd.LOCAL_BYE)
        try:
            return await waiter
        finally:
            self._waiters.pop(tx, None)

    async def request(
        self,
        method: str,
        target: SipUri,
        destination: Address,
        *,
        transport: Transport = Transport.UDP,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        """An out-of-dialog non-INVITE request (OPTIONS ping, ...); 408 on timeout."""
        if method in ("INVITE", "ACK", "CANCEL"):
            raise SipUsageError(f"{method} has its own API")
        host, port = self._local(transport)
        h = Headers()
        h.add("Via", str(self.new_via(transport)))
        h.add("Max-Forwards", "70")
        h.add(
            "From",
            str(NameAddr(SipUri(host=host, port=port, user="voxgate"), None, {"tag": new_tag()})),
        )
        h.add("To", str(NameAddr(target)))
        h.add("Call-ID", new_call_id())
        h.add("CSeq", f"1 {method}")
        h.add("User-Agent", self.user_agent)
        for name, value in headers:
            h.add(name, value)
        return await self.send_request(SipRequest(method, target, h), destination, transport)

    async def send_request(
        self, request: SipRequest, destination: Address, transport: Transport
    ) -> SipResponse:
        """Send a prebuilt non-INVITE request in a client transaction; its final response.

        Retransmissions and timer F come from the transaction layer; a timeout
        or transport failure yields a synthetic ``408`` (without Call-ID).
        Raises :class:`~voxgate.sip.errors.SipUsageError` for INVITE/ACK/CANCEL.
        """
        if request.method in ("INVITE", "ACK", "CANCEL"):
            raise SipUsageError(f"{request.method} has its own API")
        tx = self.layer.send_request(request, destination, transport, self.now())
        waiter: asyncio.Future[SipResponse] = self._loop.create_future()
        self._waiters[tx] = waiter
        self._pump()
        try:
            return await waiter
        finally:
            self._waiters.pop(tx, None)

    # ------------------------------------------------------------------ lifecycle

    def _forget(self, session: Session) -> None:
        self.dialogs.remove(session.dialog)
        if self._by_dialog.get(session.dialog.id) is session:
            del self._by_dialog[session.dialog.id]

    @property
    def sessions(self) -> list[Session]:
        """Live sessions."""
        return list(self._by_dialog.values())

    @property
    def pending_invites(self) -> int:
        """INVITEs the handler is still deciding on."""
        return len(self._pending)

    async def close(self) -> None:
        """Stop timers and handler tasks (sessions are expected to be hung up first)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for session in list(self._by_dialog.values()):
            session._finish(SessionEnd.SHUTDOWN)
