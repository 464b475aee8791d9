from __future__ import annotations

import pytest

from voxgate.sip.dialog import Dialog, DialogId, DialogState, DialogTable
from voxgate.sip.errors import SipParseError, SipUsageError
from voxgate.sip.message import (
    NameAddr,
    SipRequest,
    SipResponse,
    Via,
    make_response,
    new_branch,
    parse,
    parse_name_addr,
)
from voxgate.sip.transaction import (
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    Transport,
    TxState,
)
from voxgate.sip.uri import SipUri, parse_uri

INVITE = (
    "INVITE sip:+15550100@voxgate.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\r\n"
    "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n"
    "Via: SIP/2.0/UDP caller.example.com:5062;branch=z9hG4bKc;rport\r\n"
    "Record-Route: <sip:p2.example.com;lr>\r\n"
    "Record-Route: <sip:p1.example.com;lr>\r\n"
    "Max-Forwards: 68\r\n"
    'From: "Caller" <sip:+15550199@carrier.example>;tag=remote1\r\n'
    "To: <sip:+15550100@voxgate.example>\r\n"
    "Call-ID: dlg-1@carrier.example\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <sip:caller@198.51.100.20:5062>\r\n"
    "Content-Length: 0\r\n\r\n"
)
OUR_CONTACT = parse_name_addr("<sip:voxgate@192.0.2.1:5060>")


def via() -> Via:
    return Via("UDP", "192.0.2.1", 5060, {"branch": new_branch(), "rport": None})


def incoming_invite() -> SipRequest:
    msg = parse(INVITE.encode())
    assert isinstance(msg, SipRequest)
    return msg


def uas_dialog() -> Dialog:
    return Dialog.from_incoming_invite(
        incoming_invite(), local_tag="local1", local_contact=OUR_CONTACT
    )


def test_uas_dialog_from_invite() -> None:
    dialog = uas_dialog()
    assert dialog.id == DialogId("dlg-1@carrier.example", "local1", "remote1")
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:caller@198.51.100.20:5062"
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    assert dialog.remote_cseq == 10
    assert dialog.local_uri.tag == "local1" and dialog.remote_uri.tag == "remote1"


def test_uas_builds_bye_along_the_route_set() -> None:
    dialog = uas_dialog()
    bye = dialog.create_request("BYE", via())
    assert str(bye.uri) == "sip:caller@198.51.100.20:5062"
    assert bye.headers.get_lines("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert bye.from_addr.tag == "local1" and bye.to_addr.tag == "remote1"
    assert bye.to_addr.display_name == "Caller"
    assert bye.call_id == "dlg-1@carrier.example"
    assert bye.cseq.number == 1 and bye.cseq.method == "BYE"
    assert "Contact" not in bye.headers
    assert dialog.terminated
    assert str(dialog.next_hop()) == "sip:p2.example.com;lr"
    with pytest.raises(SipUsageError):
        dialog.create_request("INFO", via())
    # the BYE must survive a round trip through the parser
    assert parse(bye.serialize()).cseq.number == 1


def test_local_cseq_increments_and_requests_carry_contact_when_needed() -> None:
    dialog = uas_dialog()
    info = dialog.create_request(
        "INFO", via(), body=b"Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    assert info.cseq.number == 1 and "Contact" not in info.headers
    assert info.content_type == "application/dtmf-relay"
    reinvite = dialog.create_request(
        "INVITE", via(), body=b"v=0\r\n", content_type="application/sdp"
    )
    assert reinvite.cseq.number == 2
    assert reinvite.headers.get("Contact") == str(OUR_CONTACT)
    refer_to = parse_uri("sip:+15550111@carrier.example")
    with pytest.raises(SipUsageError):
        dialog.create_request("INVITE", via())  # one re-INVITE at a time
    dialog.receive_response(make_response(reinvite, 200, to_tag="remote1"))
    assert not dialog.local_invite_pending
    refer = dialog.create_refer(refer_to, via(), referred_by=OUR_CONTACT)
    assert refer.cseq.number == 3
    assert refer.headers.get("Refer-To") == "<sip:+15550111@carrier.example>"
    assert refer.headers.get("Referred-By") == str(OUR_CONTACT)
    assert refer.headers.get("Contact") == str(OUR_CONTACT)
    with pytest.raises(SipUsageError):
        dialog.create_request("INFO", via(), body=b"x")  # body without type
    with pytest.raises(SipUsageError):
        dialog.create_request("ACK", via())


def test_uac_dialog_from_2xx_and_ack() -> None:
    invite = SipRequest("INVITE", parse_uri("sip:+15550123@trunk.example"))
    invite.headers.add("Via", str(via()))
    invite.headers.add("Max-Forwards", "70")
    invite.headers.add("From", "<sip:agent@voxgate.example>;tag=ours")
    invite.headers.add("To", "<sip:+15550123@trunk.example>")
    invite.headers.add("Call-ID", "out-1")
    invite.headers.add("CSeq", "7 INVITE")
    invite.headers.add("Contact", str(OUR_CONTACT))
    ok = make_response(invite, 200, to_tag="theirs")
    ok.headers.add("Record-Route", "<sip:edge2.trunk.example;lr>")
    ok.headers.add("Record-Route", "<sip:edge1.trunk.example;lr>")
    ok.headers.add("Contact", "<sip:gw@203.0.113.9:5060;transport=udp>")
    dialog = Dialog.from_outgoing_invite(invite, ok)
    assert dialog.is_uac and dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("out-1", "ours", "theirs")
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:edge1.trunk.example;lr",
        "sip:edge2.trunk.example;lr",
    ]
    ack = dialog.create_ack(7, via())
    assert ack.method == "ACK" and ack.cseq.number == 7 and ack.cseq.method == "ACK"
    assert str(ack.uri) == "sip:gw@203.0.113.9:5060;transport=udp"
    assert ack.headers.get_lines("Route")[0] == "<sip:edge1.trunk.example;lr>"
    assert ack.top_via.branch != invite.top_via.branch
    bye = dialog.create_request("BYE", via())
    assert bye.cseq.number == 8


def test_early_dialog_confirmed_by_2xx_recomputes_target_and_routes() -> None:
    invite = SipRequest("INVITE", parse_uri("sip:bob@example.com"))
    for name, value in (
        ("Via", str(via())),
        ("From", "<sip:a@example.com>;tag=a"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "early-1"),
        ("CSeq", "1 INVITE"),
    ):
        invite.headers.add(name, value)
    ringing = make_response(invite, 180, to_tag="b")
    ringing.headers.add("Record-Route", "<sip:old.example.com;lr>")
    dialog = Dialog.from_outgoing_invite(invite, ringing)
    assert dialog.state is DialogState.EARLY
    assert str(dialog.remote_target) == "sip:bob@example.com"  # no Contact in the 180
    ok = make_response(invite, 200, to_tag="b")
    ok.headers.add("Record-Route", "<sip:new.example.com;lr>")
    ok.headers.add("Contact", "<sip:bob@192.0.2.50>")
    dialog.receive_response(ok)
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@192.0.2.50"
    assert [str(r.uri) for r in dialog.route_set] == ["sip:new.example.com;lr"]
    with pytest.raises(SipUsageError):
        Dialog.from_outgoing_invite(invite, make_response(invite, 486, to_tag="b"))
    with pytest.raises(SipParseError):
        Dialog.from_outgoing_invite(invite, make_response(invite, 200))  # no tag
    with pytest.raises(SipParseError):
        Dialog.from_outgoing_invite(invite, make_response(invite, 200, to_tag="b"))  # no Contact


def test_strict_route_puts_remote_target_last() -> None:
    dialog = uas_dialog()
    dialog.route_set = [
        parse_name_addr("<sip:strict.example.com;maddr=10.0.0.1>"),
        parse_name_addr("<sip:p1.example.com;lr>"),
    ]
    bye = dialog.create_request("BYE", via())
    assert str(bye.uri) == "sip:strict.example.com"
    assert bye.headers.get_lines("Route") == [
        "<sip:p1.example.com;lr>",
        "<sip:caller@198.51.100.20:5062>",
    ]


def in_dialog(method: str, cseq: int, contact: str | None = None) -> SipRequest:
    text = (
        f"{method} sip:voxgate@192.0.2.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP caller.example.com;branch=z9hG4bKx\r\n"
        "From: <sip:+15550199@carrier.example>;tag=remote1\r\n"
        "To: <sip:+15550100@voxgate.example>;tag=local1\r\n"
        "Call-ID: dlg-1@carrier.example\r\n"
        f"CSeq: {cseq} {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_receive_request_checks_order_refreshes_target_and_handles_glare() -> None:
    dialog = uas_dialog()
    assert dialog.receive_request(in_dialog("INFO", 9)) == 500  # lower than 10
    assert dialog.receive_request(in_dialog("INFO", 11, "<sip:moved@198.51.100.30>")) is None
    assert str(dialog.remote_target) == "sip:caller@198.51.100.20:5062"  # INFO: no refresh
    assert dialog.receive_request(in_dialog("INVITE", 12, "<sip:moved@198.51.100.30>")) is None
    assert str(dialog.remote_target) == "sip:moved@198.51.100.30"
    assert dialog.receive_request(in_dialog("INVITE", 13)) == 500  # still answering 12
    dialog.invite_answered()
    dialog.create_request("INVITE", via())
    assert dialog.receive_request(in_dialog("INVITE", 14)) == 491  # glare
    assert dialog.receive_request(in_dialog("ACK", 12)) is None
    assert dialog.receive_request(in_dialog("BYE", 15)) is None
    assert dialog.terminated


def test_481_and_408_end_the_dialog() -> None:
    dialog = uas_dialog()
    info = dialog.create_request("INFO", via())
    dialog.receive_response(make_response(info, 481))
    assert dialog.terminated
    other = uas_dialog()
    options = other.create_request("OPTIONS", via())
    other.receive_response(make_response(options, 408))
    assert other.terminated


def test_dialog_table_matching_and_481() -> None:
    table = DialogTable()
    dialog = uas_dialog()
    table.add(dialog)
    assert len(table) == 1 and table.dialogs() == [dialog]
    assert table.match_request(in_dialog("BYE", 11)) is dialog
    assert table.get(dialog.id) is dialog
    stranger = in_dialog("BYE", 11).serialize().replace(b"tag=local1", b"tag=nobody")
    unknown = parse(stranger)
    assert isinstance(unknown, SipRequest)
    assert table.match_request(unknown) is None
    answer = table.unknown_dialog_response(unknown)
    assert answer is not None and answer.status == 481
    assert answer.reason == "Call/Transaction Does Not Exist"
    ack = parse(stranger.replace(b"BYE", b"ACK"))
    assert isinstance(ack, SipRequest)
    assert table.unknown_dialog_response(ack) is None
    assert table.unknown_dialog_response(incoming_invite()) is None  # no To tag: new call
    # responses match from our side: From tag is ours
    bye = dialog.create_request("BYE", via())
    assert table.match_response(make_response(bye, 200)) is dialog
    table.remove(dialog)
    assert len(table) == 0


def test_missing_contact_or_tag_is_the_peers_fault() -> None:
    no_contact = parse(INVITE.replace("Contact: <sip:caller@198.51.100.20:5062>\r\n", "").encode())
    assert isinstance(no_contact, SipRequest)
    with pytest.raises(SipParseError):
        Dialog.from_incoming_invite(no_contact, local_tag="x")
    no_tag = parse(INVITE.replace(";tag=remote1", "").encode())
    assert isinstance(no_tag, SipRequest)
    with pytest.raises(SipParseError):
        Dialog.from_incoming_invite(no_tag, local_tag="x")


def test_full_call_between_two_layers() -> None:
    """UAC and UAS layers exchanging bytes: INVITE/100/180/200/ACK, then BYE/200."""
    uac, uas = TransactionLayer(), TransactionLayer()
    uac_addr, uas_addr = ("192.0.2.1", 5060), ("192.0.2.2", 5060)
    now = 0.0

    def pump() -> None:
        for _ in range(10):
            moved = False
            for out in uac.take_outgoing():
                uas.receive(out.data, uac_addr, Transport.UDP, now)
                moved = True
            for out in uas.take_outgoing():
                uac.receive(out.data, uas_addr, Transport.UDP, now)
                moved = True
            if not moved:
                return

    invite = SipRequest("INVITE", SipUri(host="192.0.2.2", user="100"))
    for name, value in (
        ("Via", str(via())),
        ("Max-Forwards", "70"),
        ("From", "<sip:agent@192.0.2.1>;tag=uac"),
        ("To", "<sip:100@192.0.2.2>"),
        ("Call-ID", "e2e-1"),
        ("CSeq", "1 INVITE"),
        ("Contact", "<sip:agent@192.0.2.1:5060>"),
    ):
        invite.headers.add(name, value)
    client_tx = uac.send_request(invite, uas_addr, Transport.UDP, now)
    pump()
    (incoming,) = uas.take_events()
    assert isinstance(incoming, RequestReceived) and incoming.transaction is not None
    server_tx = incoming.transaction
    uas_dialog_ = Dialog.from_incoming_invite(
        incoming.request, local_tag="uas", local_contact=NameAddr(SipUri(host="192.0.2.2"))
    )
    ok = make_response(incoming.request, 200, to_tag="uas")
    ok.headers.add("Contact", "<sip:192.0.2.2:5060>")
    uas.send_response(server_tx, make_response(incoming.request, 180, to_tag="uas"), now)
    uas.send_response(server_tx, ok, now)
    pump()
    statuses = [e.response.status for e in uac.take_events() if isinstance(e, ResponseReceived)]
    assert statuses == [100, 180, 200]
    assert client_tx.state is TxState.ACCEPTED and server_tx.state is TxState.ACCEPTED
    response = parse(ok.serialize())
    assert isinstance(response, SipResponse)
    uac_dialog = Dialog.from_outgoing_invite(invite, response)
    uac.send_ack(client_tx, uac_dialog.create_ack(1, via()))
    pump()
    (ack_event,) = uas.take_events()
    assert isinstance(ack_event, RequestReceived) and ack_event.request.method == "ACK"
    assert server_tx.ok_acked
    # the callee hangs up
    bye = uas_dialog_.create_request("BYE", Via("UDP", "192.0.2.2", 5060, {"branch": new_branch()}))
    assert str(bye.uri) == "sip:agent@192.0.2.1:5060"
    uas.send_request(bye, uac_addr, Transport.UDP, now)
    pump()
    (bye_event,) = uac.take_events()
    assert isinstance(bye_event, RequestReceived) and bye_event.transaction is not None
    assert uac_dialog.receive_request(bye_event.request) is None
    assert uac_dialog.terminated
    uac.send_response(bye_event.transaction, make_response(bye_event.request, 200), now)
    pump()
    (bye_ok,) = uas.take_events()
    assert isinstance(bye_ok, ResponseReceived) and bye_ok.response.status == 200
