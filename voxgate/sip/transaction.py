"""SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" state), sans-IO.

The :class:`TransactionLayer` sits between a transport and the transaction
user (TU: the UA core / dialogs).  It never touches a socket or a clock::

    layer = TransactionLayer(TimerConfig(t1=0.5))
    # transport side
    layer.receive(datagram, source=("198.51.100.7", 5060), transport=Transport.UDP, now=t)
    for out in layer.take_outgoing():          # Outgoing(data, destination, transport)
        sock.sendto(out.data, out.destination)
    # timers are data: sleep until layer.next_timeout(), then
    layer.handle_timer(now)
    # TU side
    for event in layer.take_events():          # RequestReceived, ResponseReceived, ...
        ...
    tx = layer.send_request(invite, ("203.0.113.5", 5060), Transport.UDP, now)
    layer.send_response(server_tx, make_response(req, 180, to_tag=tag), now)

What the layer does on its own, so the TU does not have to:

* parses datagrams and answers malformed requests statelessly (400/505/513,
  RFC 3261 §16.3/§21.4; never for ACK or responses);
* stamps ``received``/``rport`` into the top Via of every request (§18.2.1,
  RFC 3581) and routes responses per §18.2.2;
* absorbs retransmitted requests, re-sending the last provisional or final
  response (§17.2.1, §17.2.2), and sends ``100 Trying`` for new INVITEs;
* retransmits requests (timers A/E), final INVITE responses (G) and, in the
  RFC 6026 Accepted state, the 2xx to INVITE until its ACK arrives (the UAS
  core duty of §13.3.1.4);
* generates the ACK for non-2xx final INVITE responses (§17.1.1.3) and
  re-sends a TU's ACK for 2xx when the 2xx is retransmitted;
* matches CANCEL to the INVITE it cancels (§9.2): answers the CANCEL
  (200, or 481 when there is nothing to cancel) and tells the TU with
  :class:`CancelReceived`, who then answers the INVITE with 487;
* drops responses with more than one Via (§8.1.3.3 — they were not meant for
  us, e.g. RFC 4475 §3.3.10).

Events for the TU: :class:`RequestReceived` (new request; for an ACK to a
2xx, or any ACK matching no transaction, ``transaction`` is None),
:class:`ResponseReceived`, :class:`CancelReceived`,
:class:`TransactionTimeout` (timer B/F: the TU acts as if a 408 arrived;
timer H or L: the final response was never ACKed — for a 2xx the TU should
send BYE) and :class:`TransportError`.

Each transaction kind's state machine is the table :data:`TRANSITIONS`:
``(state, input) -> next state``; inputs missing from a kind's table are
ignored (a late response, a timer of a dead state...).  Reliable transports
(TCP/TLS) skip retransmissions and the wait timers D, I, J, K become zero as
§17 requires.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass, field
from typing import Final

from voxgate.sip.errors import SipParseError, SipUsageError
from voxgate.sip.message import (
    BRANCH_MAGIC,
    DEFAULT_LIMITS,
    Headers,
    SipLimits,
    SipRequest,
    SipResponse,
    error_response,
    make_response,
    parse,
    response_address,
    stamp_received,
)

__all__ = [
    "TRANSITIONS",
    "Address",
    "CancelReceived",
    "Event",
    "Outgoing",
    "RequestReceived",
    "ResponseReceived",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransactionTimeout",
    "Transport",
    "TransportError",
    "TxInput",
    "TxKind",
    "TxState",
    "build_ack_for_failure",
    "build_cancel",
]

Address = tuple[str, int]


class Transport(enum.Enum):
    """Transport protocol of a hop; decides whether retransmission timers run."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @property
    def reliable(self) -> bool:
        """True for stream transports, where §17 skips retransmissions."""
        return self is not Transport.UDP


class TxKind(enum.Enum):
    """The four transaction state machines of RFC 3261 §17."""

    INVITE_CLIENT = "invite-client"
    NON_INVITE_CLIENT = "non-invite-client"
    INVITE_SERVER = "invite-server"
    NON_INVITE_SERVER = "non-invite-server"


class TxState(enum.Enum):
    """Transaction states (ACCEPTED is RFC 6026's state after a 2xx to INVITE)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    """What can happen to a transaction: messages, TU sends, timers, errors."""

    PROVISIONAL = "1xx"  # received (client) or sent by the TU (server)
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    REQUEST = "request retransmission"
    ACK = "ack"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"  # INVITE request retransmit
    TIMER_B = "B"  # INVITE transaction timeout
    TIMER_D = "D"  # wait for response retransmits
    TIMER_E = "E"  # non-INVITE request retransmit
    TIMER_F = "F"  # non-INVITE transaction timeout
    TIMER_G = "G"  # INVITE final response retransmit
    TIMER_H = "H"  # wait for ACK
    TIMER_I = "I"  # wait for ACK retransmits
    TIMER_J = "J"  # wait for non-INVITE request retransmits
    TIMER_K = "K"  # wait for non-INVITE response retransmits
    TIMER_L = "L"  # RFC 6026: wait in Accepted (server)
    TIMER_M = "M"  # RFC 6026: wait in Accepted (client)


_S = TxState
_I = TxInput

TRANSITIONS: Final[dict[TxKind, dict[tuple[TxState, TxInput], TxState]]] = {
    # §17.1.1, Figure 5 + RFC 6026 Figure 3
    TxKind.INVITE_CLIENT: {
        (_S.CALLING, _I.TIMER_A): _S.CALLING,
        (_S.CALLING, _I.TIMER_B): _S.TERMINATED,
        (_S.CALLING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.CALLING, _I.SUCCESS): _S.ACCEPTED,
        (_S.CALLING, _I.FAILURE): _S.COMPLETED,
        (_S.CALLING, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _I.SUCCESS): _S.ACCEPTED,
        (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _I.FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _I.TIMER_D): _S.TERMINATED,
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.ACCEPTED, _I.SUCCESS): _S.ACCEPTED,
        (_S.ACCEPTED, _I.TIMER_M): _S.TERMINATED,
    },
    # §17.1.2, Figure 6
    TxKind.NON_INVITE_CLIENT: {
        (_S.TRYING, _I.TIMER_E): _S.TRYING,
        (_S.TRYING, _I.TIMER_F): _S.TERMINATED,
        (_S.TRYING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.TRYING, _I.SUCCESS): _S.COMPLETED,
        (_S.TRYING, _I.FAILURE): _S.COMPLETED,
        (_S.TRYING, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.PROCEEDING, _I.TIMER_E): _S.PROCEEDING,
        (_S.PROCEEDING, _I.TIMER_F): _S.TERMINATED,
        (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _I.SUCCESS): _S.COMPLETED,
        (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _I.PROVISIONAL): _S.COMPLETED,
        (_S.COMPLETED, _I.SUCCESS): _S.COMPLETED,
        (_S.COMPLETED, _I.FAILURE): _S.COMPLETED,
        (_S.COMPLETED, _I.TIMER_K): _S.TERMINATED,
    },
    # §17.2.1, Figure 7 + RFC 6026 Figure 5
    TxKind.INVITE_SERVER: {
        (_S.PROCEEDING, _I.REQUEST): _S.PROCEEDING,
        (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _I.SUCCESS): _S.ACCEPTED,
        (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _I.REQUEST): _S.COMPLETED,
        (_S.COMPLETED, _I.TIMER_G): _S.COMPLETED,
        (_S.COMPLETED, _I.TIMER_H): _S.TERMINATED,
        (_S.COMPLETED, _I.ACK): _S.CONFIRMED,
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.CONFIRMED, _I.REQUEST): _S.CONFIRMED,
        (_S.CONFIRMED, _I.ACK): _S.CONFIRMED,
        (_S.CONFIRMED, _I.TIMER_I): _S.TERMINATED,
        (_S.ACCEPTED, _I.REQUEST): _S.ACCEPTED,
        (_S.ACCEPTED, _I.SUCCESS): _S.ACCEPTED,
        (_S.ACCEPTED, _I.ACK): _S.ACCEPTED,
        (_S.ACCEPTED, _I.TIMER_G): _S.ACCEPTED,
        (_S.ACCEPTED, _I.TIMER_L): _S.TERMINATED,
    },
    # §17.2.2, Figure 8
    TxKind.NON_INVITE_SERVER: {
        (_S.TRYING, _I.REQUEST): _S.TRYING,
        (_S.TRYING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.TRYING, _I.SUCCESS): _S.COMPLETED,
        (_S.TRYING, _I.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _I.REQUEST): _S.PROCEEDING,
        (_S.PROCEEDING, _I.PROVISIONAL): _S.PROCEEDING,
        (_S.PROCEEDING, _I.SUCCESS): _S.COMPLETED,
        (_S.PROCEEDING, _I.FAILURE): _S.COMPLETED,
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _S.TERMINATED,
        (_S.COMPLETED, _I.REQUEST): _S.COMPLETED,
        (_S.COMPLETED, _I.TIMER_J): _S.TERMINATED,
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _S.TERMINATED,
    },
}


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer base values in seconds (§17.1.1.1, Table 4)."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # cap on non-INVITE request / INVITE response retransmit interval
    t4: float = 5.0  # max time a message stays in the network
    timer_d: float = 32.0  # >= 32 s for unreliable transports

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L, M."""
        return 64 * self.t1


@dataclass(eq=False, slots=True)
class Transaction:
    """One transaction; the TU reads it and hands it back to the layer, never mutates it."""

    kind: TxKind
    key: tuple[object, ...]
    request: SipRequest
    remote: Address
    transport: Transport
    state: TxState
    last_response: SipResponse | None = None
    timers: dict[TxInput, float] = field(default_factory=dict)
    intervals: dict[TxInput, float] = field(default_factory=dict)
    # client INVITE: ACK for a non-2xx (built once), ACKs for 2xx by To tag
    ack: bytes | None = None
    ok_acks: dict[str, bytes] = field(default_factory=dict)
    cancel_requested: bool = False
    # server INVITE in ACCEPTED: whether the ACK for our 2xx has arrived
    ok_acked: bool = False
    _request_bytes: bytes = b""
    _response_bytes: bytes = b""

    @property
    def is_client(self) -> bool:
        """True for client transactions."""
        return self.kind in (TxKind.INVITE_CLIENT, TxKind.NON_INVITE_CLIENT)

    @property
    def terminated(self) -> bool:
        """True once the transaction is gone."""
        return self.state is TxState.TERMINATED


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes the transport must send."""

    data: bytes
    destination: Address
    transport: Transport


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU (``transaction`` is None for ACKs, which have none)."""

    request: SipRequest
    transaction: Transaction | None
    source: Address
    transport: Transport


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for the TU; ``retransmission`` marks a repeated 2xx already ACKed."""

    response: SipResponse
    transaction: Transaction | None
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched a pending INVITE; the layer answered it 200, the TU owes a 487."""

    cancel: SipRequest
    invite: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (no answer: act as if 408) or H/L (our final response never ACKed)."""

    transaction: Transaction
    timer: TxInput


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport failed to deliver for this transaction (§17.1.4, §17.2.4)."""

    transaction: Transaction


Event = RequestReceived | ResponseReceived | CancelReceived | TransactionTimeout | TransportError


def _response_input(status: int) -> TxInput:
    if status < 200:
        return TxInput.PROVISIONAL
    return TxInput.SUCCESS if status < 300 else TxInput.FAILURE


def _is_rfc3261_branch(branch: str | None) -> bool:
    return (
        branch is not None and branch.startswith(BRANCH_MAGIC) and len(branch) > len(BRANCH_MAGIC)
    )


def server_key(request: SipRequest, method: str | None = None) -> tuple[object, ...]:
    """Server transaction id (§17.2.3); ACK maps onto its INVITE.

    Falls back to the RFC 2543 identity (Request-URI, From tag, Call-ID,
    CSeq number, top Via) when the branch lacks the magic cookie or is only
    the cookie (RFC 4475 §3.2.1).
    """
    via = request.top_via
    name = method or ("INVITE" if request.method == "ACK" else request.method)
    if _is_rfc3261_branch(via.branch):
        return ("3261", via.branch, via.sent_by.lower(), name)
    return (
        "2543",
        str(request.uri),
        request.from_addr.tag,
        request.call_id,
        request.cseq.number,
        # received/rport are our own stamps, not part of the peer's identity
        via.sent_by.lower(),
        via.transport,
        name,
    )


def _copy_lines(source: SipRequest, target: Headers, *names: str) -> None:
    for name in names:
        for value in source.headers.get_lines(name):
            target.add(name, value)


def build_cancel(invite: SipRequest) -> SipRequest:
    """CANCEL for a pending INVITE (§9.1): same URI, top Via, Call-ID, From, To, CSeq number."""
    headers = Headers()
    headers.add("Via", str(invite.top_via))
    _copy_lines(invite, headers, "Route")
    headers.add("Max-Forwards", "70")
    _copy_lines(invite, headers, "From", "To", "Call-ID")
    headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    return SipRequest("CANCEL", invite.uri, headers)


def build_ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    """ACK for a non-2xx final response, sent by the client transaction (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", str(invite.top_via))
    _copy_lines(invite, headers, "Route")
    headers.add("Max-Forwards", "70")
    _copy_lines(invite, headers, "From")
    to = response.headers.get("To")
    headers.add("To", to if to is not None else invite.headers.get("To") or "")
    _copy_lines(invite, headers, "Call-ID")
    headers.add("CSeq", f"{invite.cseq.number} ACK")
    return SipRequest("ACK", invite.uri, headers)


class TransactionLayer:
    """Routes messages to transactions and runs their timers; see the module docstring."""

    def __init__(
        self,
        timers: TimerConfig | None = None,
        *,
        limits: SipLimits = DEFAULT_LIMITS,
        send_trying: bool = True,
    ) -> None:
        self.config = timers or TimerConfig()
        self.limits = limits
        self.send_trying = send_trying
        self._client: dict[tuple[object, ...], Transaction] = {}
        self._server: dict[tuple[object, ...], Transaction] = {}
        self._accepted: dict[tuple[str, int], Transaction] = {}
        self._heap: list[tuple[float, int, Transaction, TxInput]] = []
        self._seq = 0
        self._events: list[Event] = []
        self._outgoing: list[Outgoing] = []

    # ------------------------------------------------------------------ public API

    def take_events(self) -> list[Event]:
        """Events for the TU since the last call, in order."""
        events, self._events = self._events, []
        return events

    def take_outgoing(self) -> list[Outgoing]:
        """Messages to send since the last call, in order."""
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def transactions(self) -> list[Transaction]:
        """Live transactions (for status pages and tests)."""
        return [*self._client.values(), *self._server.values()]

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None when idle."""
        heap = self._heap
        while heap and not self._timer_valid(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if not self._timer_valid(entry):
                continue
            _, _, tx, timer = entry
            del tx.timers[timer]
            self._on_timer(tx, timer, now)

    def receive(self, data: bytes, source: Address, transport: Transport, now: float) -> None:
        """Feed one datagram (or one :class:`StreamFramer` frame) from ``source``."""
        try:
            message = parse(data, self.limits)
        except SipParseError as exc:
            answer = error_response(exc, source)
            if answer is not None:
                self._emit(
                    answer.serialize(), self._reply_address(answer, source, transport), transport
                )
            return
        self.receive_message(message, source, transport, now)

    def receive_message(
        self, message: SipRequest | SipResponse, source: Address, transport: Transport, now: float
    ) -> None:
        """Feed an already parsed message (must come from :func:`parse`)."""
        if isinstance(message, SipResponse):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, transport, now)

    def send_request(
        self, request: SipRequest, destination: Address, transport: Transport, now: float
    ) -> Transaction:
        """Start a client transaction; the request's top Via must carry a fresh RFC 3261 branch."""
        if request.method == "ACK":
            raise SipUsageError("ACK has no client transaction; use send_ack()")
        branch = request.top_via.branch
        if not _is_rfc3261_branch(branch):
            raise SipUsageError("client requests need a z9hG4bK branch")
        key = (branch, request.method)
        if key in self._client:
            raise SipUsageError("branch already in use")
        invite = request.method == "INVITE"
        tx = Transaction(
            kind=TxKind.INVITE_CLIENT if invite else TxKind.NON_INVITE_CLIENT,
            key=key,
            request=request,
            remote=destination,
            transport=transport,
            state=TxState.CALLING if invite else TxState.TRYING,
        )
        tx._request_bytes = request.serialize()
        self._client[key] = tx
        self._emit(tx._request_bytes, destination, transport)
        retransmit = TxInput.TIMER_A if invite else TxInput.TIMER_E
        if not transport.reliable:
            tx.intervals[retransmit] = self.config.t1
            self._arm(tx, retransmit, now + self.config.t1)
        self._arm(tx, TxInput.TIMER_B if invite else TxInput.TIMER_F, now + self.config.timeout)
        return tx

    def send_ack(self, invite_tx: Transaction, ack: SipRequest) -> None:
        """Send the TU's ACK for a 2xx; it is re-sent if that 2xx is retransmitted."""
        if invite_tx.kind is not TxKind.INVITE_CLIENT or ack.method != "ACK":
            raise SipUsageError("send_ack takes an INVITE client transaction and an ACK")
        data = ack.serialize()
        tag = ack.to_addr.tag
        if tag is not None:
            invite_tx.ok_acks[tag] = data
        self._emit(data, invite_tx.remote, invite_tx.transport)

    def send_stateless(
        self, message: SipRequest | SipResponse, destination: Address, transport: Transport
    ) -> None:
        """Send a message outside any transaction (e.g. an ACK whose INVITE tx is gone)."""
        self._emit(message.serialize(), destination, transport)

    def cancel(self, invite_tx: Transaction, now: float) -> Transaction | None:
        """CANCEL a pending outgoing INVITE (§9.1).

        Before any provisional response the CANCEL is held back and sent when
        one arrives; after a final response it is pointless and nothing is
        sent.  Returns the CANCEL's own client transaction when sent now.
        """
        if invite_tx.kind is not TxKind.INVITE_CLIENT:
            raise SipUsageError("only INVITE client transactions can be cancelled")
        if invite_tx.state is TxState.CALLING:
            invite_tx.cancel_requested = True
            return None
        if invite_tx.state is not TxState.PROCEEDING:
            return None
        return self.send_request(
            build_cancel(invite_tx.request), invite_tx.remote, invite_tx.transport, now
        )

    def send_response(self, tx: Transaction, response: SipResponse, now: float) -> None:
        """Send the TU's response through its server transaction."""
        if tx.is_client:
            raise SipUsageError("responses go through server transactions")
        if tx.request.method == "ACK":
            raise SipUsageError("ACK is never answered")
        inp = _response_input(response.status)
        old = tx.state
        if not self._fire(tx, inp, now):
            raise SipUsageError(f"cannot send {response.status} in state {old.value}")
        tx.last_response = response
        tx._response_bytes = response.serialize()
        self._send_response_bytes(tx)
        if (
            tx.kind is TxKind.INVITE_SERVER
            and tx.state is TxState.ACCEPTED
            and old is not TxState.ACCEPTED
        ):
            if not tx.transport.reliable:
                tx.intervals[TxInput.TIMER_G] = self.config.t1
                self._arm(tx, TxInput.TIMER_G, now + self.config.t1)
            self._arm(tx, TxInput.TIMER_L, now + self.config.timeout)
            self._accepted[(tx.request.call_id, tx.request.cseq.number)] = tx
        elif tx.state is TxState.COMPLETED and old is not TxState.COMPLETED:
            if tx.kind is TxKind.INVITE_SERVER:
                if not tx.transport.reliable:
                    tx.intervals[TxInput.TIMER_G] = self.config.t1
                    self._arm(tx, TxInput.TIMER_G, now + self.config.t1)
                self._arm(tx, TxInput.TIMER_H, now + self.config.timeout)
            else:
                wait = 0.0 if tx.transport.reliable else self.config.timeout
                self._arm(tx, TxInput.TIMER_J, now + wait, now)

    def transport_failed(self, destination: Address, now: float) -> None:
        """The transport could not reach ``destination``: fail its transactions."""
        for tx in self.transactions:
            if tx.remote == destination and self._fire(tx, TxInput.TRANSPORT_ERROR, now):
                self._events.append(TransportError(tx))

    # ------------------------------------------------------------------ internals

    def _emit(self, data: bytes, destination: Address, transport: Transport) -> None:
        self._outgoing.append(Outgoing(data, destination, transport))

    @staticmethod
    def _reply_address(response: SipResponse, source: Address, transport: Transport) -> Address:
        if transport.reliable:
            return source  # reuse the connection the request came in on
        try:
            return response_address(response.top_via, source)
        except SipParseError:
            return source

    def _send_response_bytes(self, tx: Transaction) -> None:
        if tx.last_response is None:
            return
        self._emit(
            tx._response_bytes,
            self._reply_address(tx.last_response, tx.remote, tx.transport),
            tx.transport,
        )

    def _arm(
        self, tx: Transaction, timer: TxInput, deadline: float, now: float | None = None
    ) -> None:
        if now is not None and deadline <= now:
            self._on_timer(tx, timer, now)  # zero-length wait (reliable transports)
            return
        tx.timers[timer] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, tx, timer))

    @staticmethod
    def _timer_valid(entry: tuple[float, int, Transaction, TxInput]) -> bool:
        deadline, _, tx, timer = entry
        return tx.timers.get(timer) == deadline and not tx.terminated

    def _fire(self, tx: Transaction, inp: TxInput, now: float) -> bool:
        new = TRANSITIONS[tx.kind].get((tx.state, inp))
        if new is None:
            return False
        old = tx.state
        tx.state = new
        if new is not old:
            self._leave(tx, old)
        return True

    def _leave(self, tx: Transaction, old: TxState) -> None:
        """Timer bookkeeping on a state change."""
        if tx.kind is TxKind.INVITE_CLIENT and old is TxState.CALLING:
            tx.timers.pop(TxInput.TIMER_A, None)
            tx.timers.pop(TxInput.TIMER_B, None)
        if tx.state in (TxState.COMPLETED, TxState.ACCEPTED) and tx.is_client:
            tx.timers.pop(TxInput.TIMER_E, None)
            tx.timers.pop(TxInput.TIMER_F, None)
        if tx.kind is TxKind.INVITE_SERVER and old is TxState.COMPLETED:
            tx.timers.pop(TxInput.TIMER_G, None)
            tx.timers.pop(TxInput.TIMER_H, None)
        if tx.state is TxState.TERMINATED:
            tx.timers.clear()
            table = self._client if tx.is_client else self._server
            if table.get(tx.key) is tx:
                del table[tx.key]
            if tx.kind is TxKind.INVITE_SERVER:
                dialog_key = (tx.request.call_id, tx.request.cseq.number)
                if self._accepted.get(dialog_key) is tx:
                    del self._accepted[dialog_key]

    def _on_timer(self, tx: Transaction, timer: TxInput, now: float) -> None:
        if not self._fire(tx, timer, now):
            return
        cfg = self.config
        if timer in (TxInput.TIMER_A, TxInput.TIMER_E):
            self._emit(tx._request_bytes, tx.remote, tx.transport)
            interval = tx.intervals[timer] * 2
            if timer is TxInput.TIMER_E:
                # In Proceeding the interval is T2 outright (§17.1.2.2).
                interval = cfg.t2 if tx.state is TxState.PROCEEDING else min(interval, cfg.t2)
            tx.intervals[timer] = interval
            self._arm(tx, timer, now + interval)
        elif timer is TxInput.TIMER_G:
            if tx.state is TxState.ACCEPTED and tx.ok_acked:
                return
            self._send_response_bytes(tx)
            interval = min(tx.intervals[timer] * 2, cfg.t2)
            tx.intervals[timer] = interval
            self._arm(tx, timer, now + interval)
        elif timer in (TxInput.TIMER_B, TxInput.TIMER_F, TxInput.TIMER_H) or (
            timer is TxInput.TIMER_L and not tx.ok_acked
        ):
            self._events.append(TransactionTimeout(tx, timer))

    # ---------------------------------------------------------------- responses

    def _receive_response(self, response: SipResponse, now: float) -> None:
        vias = response.vias
        if len(vias) != 1:
            return  # §8.1.3.3: not ours to process (and never to be forwarded)
        tx = self._client.get((vias[0].branch, response.cseq.method))
        if tx is None:
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                self._events.append(ResponseReceived(response, None))  # stray 2xx: the TU ACKs
            return
        inp = _response_input(response.status)
        old = tx.state
        if not self._fire(tx, inp, now):
            return
        cfg = self.config
        if tx.kind is TxKind.INVITE_CLIENT:
            if inp is TxInput.PROVISIONAL:
                self._events.append(ResponseReceived(response, tx))
                if tx.cancel_requested:
                    tx.cancel_requested = False
                    self.send_request(build_cancel(tx.request), tx.remote, tx.transport, now)
            elif inp is TxInput.SUCCESS:
                tag = response.to_addr.tag
                resend = tx.ok_acks.get(tag) if tag is not None else None
                if resend is not None:
                    self._emit(resend, tx.remote, tx.transport)
                self._events.append(
                    ResponseReceived(response, tx, retransmission=resend is not None)
                )
                if old is not TxState.ACCEPTED:
                    self._arm(tx, TxInput.TIMER_M, now + cfg.timeout)
            else:
                if tx.ack is None:
                    tx.ack = build_ack_for_failure(tx.request, response).serialize()
                self._emit(tx.ack, tx.remote, tx.transport)
                if old is not TxState.COMPLETED:
                    self._events.append(ResponseReceived(response, tx))
                    wait = 0.0 if tx.transport.reliable else cfg.timer_d
                    self._arm(tx, TxInput.TIMER_D, now + wait, now)
        else:
            if old is TxState.COMPLETED:
                return  # retransmitted final response: absorbed
            self._events.append(ResponseReceived(response, tx))
            if tx.state is TxState.COMPLETED:
                wait = 0.0 if tx.transport.reliable else cfg.t4
                self._arm(tx, TxInput.TIMER_K, now + wait, now)

    # ----------------------------------------------------------------- requests

    def _receive_request(
        self, request: SipRequest, source: Address, transport: Transport, now: float
    ) -> None:
        stamp_received(request, source)
        key = server_key(request)
        tx = self._server.get(key)
        if request.method == "ACK":
            self._receive_ack(request, tx, source, transport, now)
            return
        if tx is not None:
            if tx.request.method != request.method:
                return  # branch reuse across methods: not a retransmission, drop
            old = tx.state
            # Absorb it; re-send our last provisional or final answer, if any.
            if self._fire(tx, TxInput.REQUEST, now) and old in (
                TxState.PROCEEDING,
                TxState.COMPLETED,
            ):
                self._send_response_bytes(tx)
            return
        invite = request.method == "INVITE"
        tx = Transaction(
            kind=TxKind.INVITE_SERVER if invite else TxKind.NON_INVITE_SERVER,
            key=key,
            request=request,
            remote=source,
            transport=transport,
            state=TxState.PROCEEDING if invite else TxState.TRYING,
        )
        self._server[key] = tx
        if request.method == "CANCEL":
            self._receive_cancel(request, tx, now)
            return
        if invite and self.send_trying:
            trying = make_response(request, 100)
            tx.last_response = trying
            tx._response_bytes = trying.serialize()
            self._send_response_bytes(tx)
        self._events.append(RequestReceived(request, tx, source, transport))

    def _receive_ack(
        self,
        ack: SipRequest,
        tx: Transaction | None,
        source: Address,
        transport: Transport,
        now: float,
    ) -> None:
        if (
            tx is not None
            and tx.kind is TxKind.INVITE_SERVER
            and tx.state in (TxState.COMPLETED, TxState.CONFIRMED)
        ):
            old = tx.state
            self._fire(tx, TxInput.ACK, now)
            if old is TxState.COMPLETED:
                wait = 0.0 if tx.transport.reliable else self.config.t4
                self._arm(tx, TxInput.TIMER_I, now + wait, now)
            return  # ACK for a non-2xx belongs to the transaction, not the TU
        # ACK for a 2xx: its own transaction (new branch); stop our 2xx retransmits.
        accepted = self._accepted.get((ack.call_id, ack.cseq.number))
        if accepted is not None:
            accepted.ok_acked = True
            accepted.timers.pop(TxInput.TIMER_G, None)
        self._events.append(RequestReceived(ack, None, source, transport))

    def _receive_cancel(self, cancel: SipRequest, cancel_tx: Transaction, now: float) -> None:
        invite_tx = self._server.get(server_key(cancel, "INVITE"))
        if invite_tx is None:
            self.send_response(cancel_tx, make_response(cancel, 481), now)
            return
        self.send_response(cancel_tx, make_response(cancel, 200, to_tag=_to_tag(invite_tx)), now)
        if invite_tx.state is TxState.PROCEEDING:
            self._events.append(CancelReceived(cancel, invite_tx))


def _to_tag(tx: Transaction) -> str | None:
    if tx.last_response is None:
        return None
    try:
        return tx.last_response.to_addr.tag
    except SipParseError:
        return None
