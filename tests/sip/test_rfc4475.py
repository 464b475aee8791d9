"""Every RFC 4475 torture message, handled as its index.json note says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voxgate.sip.errors import SipParseError
from voxgate.sip.message import SipRequest, SipResponse, error_response, parse
from voxgate.sip.uri import AbsoluteUri, SipUri

RFC4475 = Path(__file__).resolve().parents[2] / "tests" / "data" / "sip" / "rfc4475"
INDEX: list[dict[str, Any]] = json.loads((RFC4475 / "index.json").read_text())

# Messages the parser must reject, with the status of the stateless answer
# (None: silently dropped, e.g. a malformed response).
REJECTED: dict[str, int | None] = {
    "badinv01.dat": 400,
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,
    "scalarlg.dat": None,
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 400,
    "trws.dat": 400,
    "escruri.dat": 400,
    "regbadct.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 400,
    "bigcode.dat": None,
    "insuf.dat": 400,
    "multi01.dat": 400,
    "mcl01.dat": 400,
    "test.dat": None,  # no Via to answer to: discarded
}
# "invalid" in the RFC, but its note allows ignoring the flaw: we parse these.
TOLERATED = {"baddate.dat", "badaspec.dat"}


def load(name: str) -> bytes:
    return (RFC4475 / name).read_bytes()


def parsed(name: str) -> SipRequest | SipResponse:
    return parse(load(name))


def request(name: str) -> SipRequest:
    msg = parsed(name)
    assert isinstance(msg, SipRequest)
    return msg


def test_index_covers_every_file() -> None:
    files = {p.name for p in RFC4475.glob("*.dat")}
    assert files == {entry["file"] for entry in INDEX}
    assert len(files) == 50
    assert set(REJECTED) | TOLERATED >= {e["file"] for e in INDEX if e["expect"] == "invalid"}


@pytest.mark.parametrize("entry", INDEX, ids=[e["file"] for e in INDEX])
def test_each_message_is_handled_as_noted(entry: dict[str, Any]) -> None:
    name = entry["file"]
    data = load(name)
    if name in REJECTED:
        with pytest.raises(SipParseError) as info:
            parse(data)
        exc = info.value
        assert exc.reason.isascii() and "\r" not in exc.reason and "\n" not in exc.reason
        answer = error_response(exc, source=("192.0.2.99", 5099))
        expected = REJECTED[name]
        if expected is None:
            assert answer is None
        else:
            assert answer is not None
            assert answer.status == expected
            assert answer.reason == exc.reason
            wire = answer.serialize()
            assert wire.startswith(f"SIP/2.0 {expected} ".encode())
            # The stateless answer must carry the request's Via to be routable.
            assert b"\r\nVia: " in wire
        return
    msg = parse(data)
    assert isinstance(msg, SipRequest | SipResponse)
    # Whatever we accept we can print, and what we print parses to the same thing.
    again = parse(msg.serialize())
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert [str(v) for v in again.vias] == [str(v) for v in msg.vias]
    assert str(again.from_addr) == str(msg.from_addr)
    assert str(again.to_addr) == str(msg.to_addr)
    assert again.call_id == msg.call_id
    assert again.cseq == msg.cseq
    if isinstance(msg, SipRequest):
        assert isinstance(again, SipRequest)
        assert again.method == msg.method
        assert str(again.uri) == str(msg.uri)


def test_wsinv_short_tortuous_invite() -> None:
    msg = request("wsinv.dat")
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.params == {"unknownparam": None}
    to = msg.to_addr
    assert isinstance(to.uri, SipUri) and to.uri.host == "chair-dnrc.example.com"
    assert to.tag == "1918181833n"
    frm = msg.from_addr
    assert frm.display_name == 'J Rosenberg \\"'
    assert frm.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    vias = msg.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = msg.routes
    assert isinstance(route.uri, SipUri) and route.uri.lr
    assert route.uri.params["unknownwith"] == "value"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.content_type == "application/sdp"
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("intmeth.dat")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq.method == msg.method
    assert msg.cseq.number == 139122385
    uri = msg.uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    to = msg.to_addr
    assert to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    frm = msg.from_addr
    assert frm.display_name == "token1~` token2'+_ token3*%!.-"
    assert frm.tag == "_token~1'+`*%!-."
    word = "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
    assert frm.params["fromparam''~+*_!.-%"] == f'"{word}"'
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") is not None


def test_esc01_decodes_escapes_exactly_once() -> None:
    msg = request("esc01.dat")
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "sips:user@example.com"
    assert msg.uri.host == "example.net"
    assert msg.to_addr.sip_uri.user == "user"
    assert msg.from_addr.sip_uri.user == "I have spaces"
    (contact,) = msg.contacts
    assert contact.sip_uri.user == "caller"
    # %25%34%31 -> "%41", which must not be decoded again into "A".
    assert contact.sip_uri.params == {"lr": None, "name": "value%41"}


def test_escnull_keeps_nul_in_user_and_bindings_distinct() -> None:
    msg = request("escnull.dat")
    assert msg.to_addr.sip_uri.user == "null-\x00-null"
    users = [c.sip_uri.user for c in msg.contacts]
    assert users == ["\x00", "\x00\x00"]


def test_esc02_percent_that_is_not_an_escape() -> None:
    msg = request("esc02.dat")
    assert msg.method == "RE%47IST%45R"
    assert len(msg.contacts) == 2
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.to_addr.display_name == "%Z%45"
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_display_name_without_space() -> None:
    assert request("lwsdisp.dat").from_addr.display_name == "caller"


def test_longreq_long_values_untruncated() -> None:
    msg = request("longreq.dat")
    assert len(msg.vias) == 34
    to = msg.to_addr
    assert to.display_name is not None and to.display_name.endswith("extreme proportion")
    assert to.sip_uri.port == 6000
    assert len(msg.from_addr.tag or "") > 150
    assert msg.call_id.endswith("longcallid")


def test_dblreq_ignores_trailing_octets() -> None:
    msg = request("dblreq.dat")
    assert msg.method == "REGISTER"
    assert msg.body == b""


def test_semiuri_user_part_with_semicolon() -> None:
    msg = request("semiuri.dat")
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "user;par=u@example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == {}
    assert len(msg.header_tokens("Accept")) == 6


def test_transports_unknown_transport_kept() -> None:
    msg = request("transports.dat")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_framed_by_content_length() -> None:
    data = load("mpart01.dat")
    msg = request("mpart01.dat")
    assert len(msg.body) == 553
    assert b"\x00" in msg.body
    assert data.endswith(msg.body)


def test_unreason_and_noreason() -> None:
    msg = parsed("unreason.dat")
    assert isinstance(msg, SipResponse) and msg.status == 200
    assert "\u043f\u0440\u043e\u0441\u0442\u043e\u0435" in msg.reason
    empty = parsed("noreason.dat")
    assert isinstance(empty, SipResponse) and (empty.status, empty.reason) == (100, "")


def test_unusual_but_grammatical_messages() -> None:
    assert request("badbranch.dat").top_via.branch == "z9hG4bK"
    unkscm = request("unkscm.dat")
    assert isinstance(unkscm.uri, AbsoluteUri)
    novelsc = request("novelsc.dat")
    assert isinstance(novelsc.uri, AbsoluteUri) and novelsc.uri.scheme == "soap.beep"
    unksm2 = request("unksm2.dat")
    assert isinstance(unksm2.to_addr.uri, AbsoluteUri) and unksm2.to_addr.uri.scheme == "isbn"
    assert str(unksm2.contacts[0].uri) == "name:John_Smith"
    bext = request("bext01.dat")
    assert bext.header_tokens("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert len(bext.header_tokens("Proxy-Require")) == 2
    assert request("invut.dat").content_type == "application/unknownformat"
    assert request("regaut01.dat").headers.get("Authorization") is not None
    assert request("zeromf.dat").max_forwards == 0
    assert request("sdp01.dat").header_tokens("Accept") == ["text/nobodyKnowsThis"]
    bcast = parsed("bcast.dat")
    assert isinstance(bcast, SipResponse)
    assert bcast.vias[1].host == "255.255.255.255"


def test_contact_params_with_and_without_brackets() -> None:
    (c1,) = request("cparam01.dat").contacts
    assert c1.sip_uri.params == {}
    assert c1.params == {"unknownparam": None}
    (c2,) = request("cparam02.dat").contacts
    assert c2.sip_uri.params == {"unknownparam": None}
    assert c2.params == {}
    (c3,) = request("regescrt.dat").contacts
    assert c3.sip_uri.headers == [("Route", "<sip:sip.example.com>")]
    assert "?Route=%3Csip:sip.example.com%3E" in str(c3)


def test_inv2543_body_runs_to_end_of_datagram() -> None:
    data = load("inv2543.dat")
    msg = request("inv2543.dat")
    assert msg.top_via.branch is None
    assert msg.from_addr.tag is None
    assert msg.max_forwards is None
    assert data.endswith(msg.body) and msg.body.startswith(b"v=0")


def test_tolerated_flaws() -> None:
    assert request("baddate.dat").headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert request("badaspec.dat").to_addr.sip_uri.host == "example.org"


def test_insuf_partial_message_answers_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse(load("insuf.dat"))
    assert isinstance(info.value.message, SipRequest)
    answer = error_response(info.value)
    assert answer is not None and answer.status == 400
    assert answer.headers.get("CSeq") == "193942 INVITE"
