"""SIP dialogs (RFC 3261 §12-15), sans-IO.

A :class:`Dialog` is the state two user agents share after an INVITE is
answered with a tagged 1xx (early) or a 2xx (confirmed): the dialog id
(Call-ID + local tag + remote tag), both sequence numbers, the remote target
(the peer's Contact) and the route set (Record-Route).  It builds every
in-dialog request correctly and checks the ones that arrive.

UAS side (incoming call)::

    tag = new_tag()
    dialog = Dialog.from_incoming_invite(invite, local_tag=tag, local_contact=our_contact)
    table.add(dialog)
    layer.send_response(tx, make_response(invite, 200, to_tag=tag) + Contact + SDP, now)

UAC side (outgoing call)::

    dialog = Dialog.from_outgoing_invite(invite, response)   # tagged 1xx or 2xx
    ack = dialog.create_ack(invite.cseq.number, Via(... new_branch() ...))
    layer.send_ack(tx, ack)

In-dialog traffic::

    bye = dialog.create_request("BYE", via)          # also re-INVITE, INFO, REFER...
    status = dialog.receive_request(req)             # None = go on, else reject with it
    dialog.receive_response(resp)                    # target refresh, 481/408 teardown
    table.match_request(req) / table.unknown_dialog_response(req)   # 481

The route set decides where requests go: :meth:`Dialog.next_hop` is the URI
the transport resolves (first Route, else the Request-URI), covering loose
and strict routing (§12.2.1.1).  Local CSeq numbers increase by one per new
request; ACK and CANCEL reuse the INVITE's number as §13.2.2.4 and §9.1
require.  Nothing here touches sockets or clocks.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from voxgate.sip.errors import SipParseError, SipUsageError
from voxgate.sip.message import (
    Headers,
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    make_response,
)
from voxgate.sip.uri import SipUri, Uri

__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
]

# Requests whose Contact replaces the remote target (§12.2; RFC 3311, 6665, 3515).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Requests that carry our Contact so the peer can refresh its target of us.
_CONTACT_METHODS = TARGET_REFRESH_METHODS


class DialogState(enum.Enum):
    """Dialog states of §12: early (tagged 1xx), confirmed (2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_DIALOG_TRANSITIONS: dict[DialogState, frozenset[DialogState]] = {
    DialogState.EARLY: frozenset({DialogState.CONFIRMED, DialogState.TERMINATED}),
    DialogState.CONFIRMED: frozenset({DialogState.TERMINATED}),
    DialogState.TERMINATED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus local and remote tag, seen from our side (§12)."""

    call_id: str
    local_tag: str
    remote_tag: str


def _require_tag(addr: NameAddr, what: str) -> str:
    tag = addr.tag
    if not tag:
        raise SipParseError(f"Missing {what} tag")
    return tag


def _contact_uri(message: SipRequest | SipResponse) -> Uri | None:
    contacts = message.contacts
    return contacts[0].uri if contacts else None


@dataclass(eq=False, slots=True)
class Dialog:
    """One dialog's state.

    Build it with :meth:`from_incoming_invite` (UAS) or :meth:`from_outgoing_invite` (UAC).
    """

    id: DialogId
    state: DialogState
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: Uri
    route_set: list[NameAddr]
    local_contact: NameAddr | None
    local_cseq: int
    remote_cseq: int | None
    secure: bool = False
    is_uac: bool = False
    # re-INVITE bookkeeping for glare (§14.1: 491) and overlap (§14.2: 500)
    local_invite_pending: bool = False
    remote_invite_pending: bool = False

    # -------------------------------------------------------------- creation

    @classmethod
    def from_incoming_invite(
        cls,
        invite: SipRequest,
        *,
        local_tag: str,
        local_contact: NameAddr | None = None,
        early: bool = False,
    ) -> Dialog:
        """UAS dialog for an INVITE we answer with ``local_tag`` (§12.1.1)."""
        target = _contact_uri(invite)
        if target is None:
            raise SipParseError("Missing Contact")
        remote = invite.from_addr
        return cls(
            id=DialogId(invite.call_id, local_tag, _require_tag(remote, "From")),
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            local_uri=invite.to_addr.with_tag(local_tag),
            remote_uri=remote,
            remote_target=target,
            route_set=list(invite.record_routes),
            local_contact=local_contact,
            local_cseq=0,
            remote_cseq=invite.cseq.number,
            secure=isinstance(invite.uri, SipUri) and invite.uri.scheme == "sips",
            is_uac=False,
        )

    @classmethod
    def from_outgoing_invite(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """UAC dialog from a tagged 1xx (early) or 2xx (confirmed) to our INVITE (§12.1.2)."""
        if not 101 <= response.status < 300:
            raise SipUsageError("dialogs come from tagged 1xx or 2xx responses")
        remote = response.to_addr
        target = _contact_uri(response)
        if target is None:
            if response.status >= 200:
                raise SipParseError("Missing Contact")
            target = invite.uri  # an early dialog may lack a Contact
        local_contacts = invite.contacts
        return cls(
            id=DialogId(
                invite.call_id,
                _require_tag(invite.from_addr, "From"),
                _require_tag(remote, "To"),
            ),
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_uri=invite.from_addr,
            remote_uri=remote,
            remote_target=target,
            route_set=list(reversed(response.record_routes)),
            local_contact=local_contacts[0] if local_contacts else None,
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            secure=isinstance(invite.uri, SipUri) and invite.uri.scheme == "sips",
            is_uac=True,
        )

    # ---------------------------------------------------------------- state

    def _set_state(self, state: DialogState) -> None:
        if state is self.state:
            return
        if state not in _DIALOG_TRANSITIONS[self.state]:
            raise SipUsageError(f"dialog cannot go from {self.state.value} to {state.value}")
        self.state = state

    def terminate(self) -> None:
        """Mark the dialog over (BYE sent or received, or a fatal error)."""
        self._set_state(DialogState.TERMINATED)

    @property
    def terminated(self) -> bool:
        """True once the dialog is over."""
        return self.state is DialogState.TERMINATED

    def confirm(self, response: SipResponse) -> None:
        """An early UAC dialog got its 2xx: confirm it and recompute target/routes (§13.2.2.4)."""
        if not 200 <= response.status < 300:
            raise SipUsageError("only a 2xx confirms a dialog")
        target = _contact_uri(response)
        if target is not None:
            self.remote_target = target
        if self.is_uac and self.state is DialogState.EARLY:
            self.route_set = list(reversed(response.record_routes))
        self._set_state(DialogState.CONFIRMED)

    # ------------------------------------------------------------- requests

    def next_hop(self) -> Uri:
        """The URI the transport should resolve for in-dialog requests."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].uri
        if isinstance(first, SipUri) and first.lr:
            return self.remote_target, [str(r) for r in self.route_set]
        # Strict routing (RFC 2543 proxy): the first route becomes the
        # Request-URI and the remote target goes last in Route (§12.2.1.1).
        if isinstance(first, SipUri):
            first = first.copy(params={}, headers=[])
        routes = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        return first, routes

    def _build(
        self,
        method: str,
        cseq: int,
        via: Via,
        body: bytes,
        content_type: str | None,
        headers: Iterable[tuple[str, str]],
    ) -> SipRequest:
        uri, routes = self._request_uri_and_routes()
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        for route in routes:
            h.add("Route", route)
        h.add("From", str(self.local_uri))
        h.add("To", str(self.remote_uri))
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if method in _CONTACT_METHODS and self.local_contact is not None:
            h.add("Contact", str(self.local_contact))
        for name, value in headers:
            h.add(name, value)
        if body:
            if content_type is None:
                raise SipUsageError("a body needs a Content-Type")
            h.add("Content-Type", content_type)
        return SipRequest(method, uri, h, body)

    def create_request(
        self,
        method: str,
        via: Via,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """A new in-dialog request (BYE, re-INVITE, INFO, REFER, UPDATE, ...).

        ``via`` must carry a fresh branch.  The local CSeq goes up by one.  A
        BYE ends the dialog at once (§15.1.1: media stops when BYE is sent).
        """
        if method in ("ACK", "CANCEL"):
            raise SipUsageError(f"use create_ack() / build_cancel() for {method}")
        if self.terminated:
            raise SipUsageError("dialog is terminated")
        if method == "INVITE":
            if self.local_invite_pending or self.remote_invite_pending:
                raise SipUsageError("a re-INVITE is already in progress")
            self.local_invite_pending = True
        if self.local_cseq >= 2**31 - 1:
            raise SipUsageError("CSeq space exhausted")
        self.local_cseq += 1
        request = self._build(method, self.local_cseq, via, body, content_type, headers)
        if method == "BYE":
            self.terminate()
        return request

    def create_refer(
        self, refer_to: Uri, via: Via, *, referred_by: NameAddr | None = None
    ) -> SipRequest:
        """A REFER for a blind transfer (RFC 3515) to ``refer_to``."""
        extra = [("Refer-To", f"<{refer_to}>")]
        if referred_by is not None:
            extra.append(("Referred-By", str(referred_by)))
        return self.create_request("REFER", via, headers=extra)

    def create_ack(
        self,
        invite_cseq: int,
        via: Via,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> SipRequest:
        """ACK for a 2xx to INVITE: the INVITE's CSeq number, its own new branch (§13.2.2.4)."""
        return self._build("ACK", invite_cseq, via, body, content_type, ())

    def receive_request(self, request: SipRequest) -> int | None:
        """Check and apply an in-dialog request; return an error status to answer, or None.

        500 for an out-of-order CSeq (§12.2.2), 491 for a re-INVITE crossing
        ours (§14.2), 500 for a re-INVITE overlapping an unanswered one.  A
        target refresh request's Contact becomes the new remote target; BYE
        ends the dialog.  ACK and CANCEL are not sequence-checked.
        """
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None
        number = request.cseq.number
        if self.remote_cseq is not None and number < self.remote_cseq:
            return 500
        if method == "INVITE":
            if self.local_invite_pending:
                return 491
            if self.remote_invite_pending:
                return 500
            self.remote_invite_pending = True
        self.remote_cseq = number
        if method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target
        if method == "BYE" and not self.terminated:
            self.terminate()
        return None

    def invite_answered(self) -> None:
        """The TU sent a final response to the peer's re-INVITE."""
        self.remote_invite_pending = False

    def receive_response(self, response: SipResponse) -> None:
        """Apply a response to a request we sent in this dialog (§12.2.1.2, §14.1)."""
        method = response.cseq.method
        if method == "INVITE" and response.status >= 200:
            self.local_invite_pending = False
        if response.status in (481, 408) and method != "BYE":
            if not self.terminated:
                self.terminate()
            return
        if method == "INVITE" and 200 <= response.status < 300:
            if self.state is DialogState.EARLY:
                self.confirm(response)
            else:
                target = _contact_uri(response)
                if target is not None:
                    self.remote_target = target


class DialogTable:
    """Dialogs by id; routes in-dialog messages and answers unknown ones with 481."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def dialogs(self) -> list[Dialog]:
        """A snapshot of every dialog."""
        return list(self._dialogs.values())

    def add(self, dialog: Dialog) -> None:
        """Register a dialog (replacing an early one with the same id)."""
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        """Forget a dialog."""
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]

    def get(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with this id, if any."""
        return self._dialogs.get(dialog_id)

    def match_request(self, request: SipRequest) -> Dialog | None:
        """The dialog an incoming request belongs to (To tag = ours, From tag = theirs)."""
        local = request.to_addr.tag
        remote = request.from_addr.tag
        if not local or not remote:
            return None
        return self._dialogs.get(DialogId(request.call_id, local, remote))

    def match_response(self, response: SipResponse) -> Dialog | None:
        """The dialog a response to our request belongs to (From tag = ours)."""
        local = response.from_addr.tag
        remote = response.to_addr.tag
        if not local or not remote:
            return None
        return self._dialogs.get(DialogId(response.call_id, local, remote))

    @staticmethod
    def unknown_dialog_response(request: SipRequest) -> SipResponse | None:
        """481 for a request that claims a dialog (To tag) we do not know (§12.2.2).

        None when no answer is due: ACKs are never answered and requests
        without a To tag are not in-dialog.
        """
        if request.method == "ACK" or not request.to_addr.tag:
            return None
        return make_response(request, 481)
