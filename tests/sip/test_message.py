from __future__ import annotations

import pytest

from voxgate.sip.errors import SipParseError, SipUsageError
from voxgate.sip.message import (
    CSeq,
    Headers,
    NameAddr,
    SipLimits,
    SipRequest,
    SipResponse,
    StreamFramer,
    Via,
    error_response,
    make_response,
    parse,
    parse_name_addr,
    quote,
    response_address,
    split_list,
    stamp_received,
    unquote,
)
from voxgate.sip.uri import SipUri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Timestamp: 54\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def invite() -> SipRequest:
    msg = parse(INVITE)
    assert isinstance(msg, SipRequest)
    return msg


def test_parse_basic_request() -> None:
    msg = invite()
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:bob@biloxi.example.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.from_addr.tag == "1928301774"
    assert msg.from_addr.display_name == "Alice"
    assert msg.to_addr.display_name == "Bob"
    assert msg.to_addr.tag is None
    assert msg.max_forwards == 70
    assert msg.body == b"v=0\n"
    assert msg.top_via.has_rport and msg.top_via.rport is None


def test_compact_forms_and_case_insensitive_names() -> None:
    data = (
        b"OPTIONS sip:a@b.example SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n"
        b"t: <sip:a@b.example>\r\n"
        b"f: <sip:c@d.example>;tag=x\r\n"
        b"i: cid-1\r\n"
        b"cSEQ: 1 OPTIONS\r\n"
        b"k: timer, 100rel\r\n"
        b"m: <sip:c@10.0.0.1>\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = parse(data)
    assert msg.call_id == "cid-1"
    assert msg.headers.get("CALL-ID") == "cid-1"
    assert msg.headers.get("i") == "cid-1"
    assert msg.header_tokens("Supported") == ["timer", "100rel"]
    assert [name for name, _ in msg.headers][:3] == ["Via", "To", "From"]
    assert "CSeq" in msg.headers
    # serialisation uses the full names
    wire = msg.serialize()
    assert b"\r\nCall-ID: cid-1\r\n" in wire and b"\r\nSupported: timer, 100rel\r\n" in wire


def test_line_folding_is_unfolded() -> None:
    data = INVITE.replace(b"Subject", b"X").replace(
        b"CSeq: 314159 INVITE\r\n", b"CSeq: 314159\r\n\tINVITE\r\nSubject: one\r\n  two\r\n"
    )
    msg = parse(data)
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.headers.get("Subject") == "one two"


def test_bare_lf_line_endings_are_tolerated() -> None:
    msg = parse(INVITE.replace(b"\r\n", b"\n"))
    assert msg.body == b"v=0\n"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_multi_value_headers_split_on_commas_outside_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j,k@x.example;a=1>;q=0.5, <sip:k@y.example>,sip:z@w.example'
    assert split_list(value) == [
        '"Doe, John" <sip:j,k@x.example;a=1>;q=0.5',
        "<sip:k@y.example>",
        "sip:z@w.example",
    ]
    assert split_list(r'"a\", b", c') == [r'"a\", b"', "c"]
    msg = invite()
    msg.headers.add("Contact", value)
    contacts = msg.contacts
    assert [c.display_name for c in contacts] == [None, "Doe, John", None, None]
    assert contacts[1].params == {"q": "0.5"}


def test_empty_list_elements_are_rejected_for_via_and_contact() -> None:
    with pytest.raises(SipParseError, match="Bad Via"):
        parse(INVITE.replace(b";rport\r\n", b";rport,,\r\n"))
    with pytest.raises(SipParseError, match="Bad Contact"):
        parse(INVITE.replace(b"atlanta.example.com>\r\n", b"atlanta.example.com>, ,\r\n"))


def test_quoted_strings_and_escapes() -> None:
    assert unquote(r'"a \"quoted\" \\ name"') == 'a "quoted" \\ name'
    assert unquote(quote('x"y\\z')) == 'x"y\\z'
    addr = parse_name_addr(r'"J \"R\"" <sip:j@example.com>;tag=1')
    assert addr.display_name == 'J "R"'
    assert str(addr) == r'"J \"R\"" <sip:j@example.com>;tag=1'
    with pytest.raises(SipParseError):
        parse_name_addr('"open <sip:j@example.com>')


def test_name_addr_forms() -> None:
    bare = parse_name_addr("sip:a@example.com;tag=5;transport=udp")
    assert bare.display_name is None
    assert bare.sip_uri.params == {}
    assert bare.params == {"tag": "5", "transport": "udp"}
    assert str(bare) == "<sip:a@example.com>;tag=5;transport=udp"
    tokens = parse_name_addr("Alice  Smith<sip:a@example.com;lr>")
    assert tokens.display_name == "Alice Smith"
    assert tokens.sip_uri.lr
    ipv6 = parse_name_addr("<sip:[2001:db8::1]:5070>;received=2001:db8::9")
    assert ipv6.sip_uri.host == "2001:db8::1"
    assert ipv6.params["received"] == "2001:db8::9"
    tagged = bare.with_tag("9")
    assert tagged.tag == "9" and bare.tag == "5"
    for bad in (
        "Bell, Alexander <sip:a@example.com>",
        "sip:a@example.com?x=y",
        "<sip:a@example.com",
        "<sip:a@example.com> junk",
        "<sip:a@example.com>;",
        "<sip:a@example.com>;=x",
        "",
    ):
        with pytest.raises(SipParseError):
            parse_name_addr(bad)


def test_via_parsing() -> None:
    via = Via.parse("SIP / 2.0 / tcp [2001:db8::1] : 5070 ; branch = z9hG4bKx ; rport=5071")
    assert via.transport == "TCP"
    assert (via.host, via.port) == ("2001:db8::1", 5070)
    assert via.branch == "z9hG4bKx"
    assert via.rport == 5071
    assert str(via) == "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKx;rport=5071"
    flag = Via.parse("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKa;received=192.0.2.7")
    assert flag.has_rport and flag.rport is None and flag.received == "192.0.2.7"
    for bad in (
        "SIP/2.0/UDP",
        "HTTP/1.1/UDP host",
        "SIP/3.0/UDP host",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;rport=99999",
        "SIP/2.0/UDP host:port",
        "SIP/2.0/UDP host junk",
    ):
        with pytest.raises(SipParseError):
            Via.parse(bad)


def test_cseq_bounds() -> None:
    assert CSeq.parse("2147483647 BYE") == CSeq(2**31 - 1, "BYE")
    for bad in ("2147483648 BYE", "-1 BYE", "1", "x INVITE", "99999999999999999999 INVITE"):
        with pytest.raises(SipParseError):
            CSeq.parse(bad)


def test_content_length_framing_for_datagrams() -> None:
    assert parse(INVITE + b"trailing junk").body == b"v=0\n"
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(INVITE[:-2])
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse(no_length + b"more").body == b"v=0\nmore"
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 4"))
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(INVITE.replace(b"Content-Length: 4", b"Content-Length: 4x"))


def test_leading_crlf_is_ignored() -> None:
    assert parse(b"\r\n\r\n" + INVITE).method == "INVITE"  # type: ignore[union-attr]


def test_start_line_errors() -> None:
    for line, status in (
        (b"INVITE sip:bob@biloxi.example.com SIP/3.0", 505),
        (b"INVITE  sip:bob@biloxi.example.com SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com", 400),
        (b"INV<ITE sip:bob@biloxi.example.com SIP/2.0", 400),
        (b"INVITE sip:bob@biloxi.example.com?Route=x SIP/2.0", 400),
    ):
        data = INVITE.replace(INVITE.split(b"\r\n", 1)[0], line)
        with pytest.raises(SipParseError) as info:
            parse(data)
        assert info.value.status == status
        answer = error_response(info.value, ("192.0.2.9", 5062))
        assert answer is not None and answer.status == status
        assert answer.headers.get("Call-ID") == "a84b4c76e66710@pc33.atlanta.example.com"
        assert answer.top_via.received == "192.0.2.9"
    for line in (b"SIP/2.0 1000 Big", b"SIP/2.0 099 Low", b"SIP/2.0 2x0 OK", b"SIP/2 200 OK"):
        with pytest.raises(SipParseError) as info:
            parse(INVITE.replace(INVITE.split(b"\r\n", 1)[0], line))
        assert error_response(info.value) is None


def test_ack_errors_are_never_answered() -> None:
    bad_ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"314159 INVITE", b"314159 ACK")
    bad_ack = bad_ack.replace(b"Call-ID", b"X-Call-ID")
    with pytest.raises(SipParseError) as info:
        parse(bad_ack)
    assert error_response(info.value) is None


def test_missing_and_duplicate_required_headers() -> None:
    with pytest.raises(SipParseError, match="Missing Call-ID"):
        parse(INVITE.replace(b"Call-ID:", b"X-Call-ID:"))
    with pytest.raises(SipParseError, match="Missing Via"):
        parse(INVITE.replace(b"Via:", b"X-Via:"))
    with pytest.raises(SipParseError, match="Multiple To"):
        parse(INVITE.replace(b"Max-Forwards: 70\r\n", b"t: <sip:x@y.example>\r\n"))
    with pytest.raises(SipParseError, match="CSeq Method Mismatch"):
        parse(INVITE.replace(b"314159 INVITE", b"314159 BYE"))
    with pytest.raises(SipParseError, match="Bad Header Line"):
        parse(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"))
    with pytest.raises(SipParseError, match="Bad Header Line"):
        parse(INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n\tcontinued\rx\r\n"))


def test_size_limits() -> None:
    limits = SipLimits(max_message_bytes=300, max_headers=12, max_header_line=120)
    with pytest.raises(SipParseError) as info:
        parse(INVITE + b"x" * 300, limits)
    assert info.value.status == 513
    many = INVITE.replace(b"Timestamp: 54\r\n", b"X-A: 1\r\n" * 5)
    with pytest.raises(SipParseError, match="Too Many Headers"):
        parse(many, SipLimits(max_headers=12))
    long_line = INVITE.replace(b"Timestamp: 54", b"X-Long: " + b"a" * 200)
    with pytest.raises(SipParseError, match="Header Too Long"):
        parse(long_line, SipLimits(max_header_line=120))
    assert parse(INVITE).method == "INVITE"  # type: ignore[union-attr]


def test_serialize_round_trip_recomputes_content_length() -> None:
    msg = invite()
    msg.body = b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
    wire = msg.serialize()
    assert wire.count(b"Content-Length") == 1
    again = parse(wire)
    assert again.body == msg.body
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == [
        (n, v) for n, v in msg.headers if n != "Content-Length"
    ]


def test_headers_multimap_operations() -> None:
    h = Headers([("Via", "a"), ("To", "t"), ("v", "b, c"), ("X-Other", "1")])
    assert h.get_lines("Via") == ["a", "b, c"]
    assert h.get_all("via") == ["a", "b", "c"]
    h.set_all("Via", ["z", "y"])
    assert list(h) == [("Via", "z"), ("Via", "y"), ("To", "t"), ("X-Other", "1")]
    h.set("Max-Forwards", "70")
    assert list(h)[-1] == ("Max-Forwards", "70")
    h.remove("x-other")
    assert "X-Other" not in h and len(h) == 4
    assert Headers([("x", "90")]).get("Session-Expires") == "90"
    h.insert(0, "Route", "<sip:p.example;lr>")
    assert next(iter(h)) == ("Route", "<sip:p.example;lr>")
    assert h.copy().get("route") == "<sip:p.example;lr>"
    with pytest.raises(SipUsageError):
        h.add("X-Evil", "a\r\nVia: injected")
    with pytest.raises(SipUsageError):
        h.add("Bad:Name", "x")


def test_make_response_copies_headers_per_rfc3261() -> None:
    msg = invite()
    msg.headers.add("Record-Route", "<sip:p1.example.com;lr>")
    ringing = make_response(msg, 180, to_tag="abc")
    assert (ringing.status, ringing.reason) == (180, "Ringing")
    assert ringing.to_addr.tag == "abc"
    assert ringing.from_addr.tag == "1928301774"
    assert ringing.call_id == msg.call_id and ringing.cseq == msg.cseq
    assert [str(v) for v in ringing.vias] == [str(v) for v in msg.vias]
    assert "Timestamp" not in ringing.headers
    assert "Record-Route" not in ringing.headers  # the UAS adds it itself when needed
    trying = make_response(msg, 100, to_tag="abc")
    assert trying.to_addr.tag is None
    assert trying.headers.get("Timestamp") == "54"
    # an existing To tag is never replaced
    msg.headers.set("To", "<sip:bob@biloxi.example.com>;tag=zzz")
    assert make_response(msg, 200, "Fine", to_tag="abc").to_addr.tag == "zzz"
    assert make_response(msg, 200, "Fine").reason == "Fine"
    ack = SipRequest("ACK", SipUri(host="x"), msg.headers.copy())
    with pytest.raises(SipUsageError):
        make_response(ack, 200)


def test_received_and_rport_stamping() -> None:
    msg = invite()
    response = make_response(msg, 200, to_tag="t", source=("198.51.100.7", 40123))
    top = response.top_via
    assert top.received == "198.51.100.7" and top.rport == 40123
    assert response_address(top) == ("198.51.100.7", 40123)
    # without rport: received only when the host differs
    plain = SipRequest("OPTIONS", SipUri(host="x"))
    plain.headers.add("Via", "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z")
    stamp_received(plain, ("192.0.2.1", 5070))
    assert plain.top_via.received is None
    stamp_received(plain, ("192.0.2.200", 5070))
    assert plain.top_via.received == "192.0.2.200"
    assert len(plain.vias) == 2 and plain.vias[1].host == "p"
    assert response_address(plain.top_via) == ("192.0.2.200", 5070)
    assert response_address(Via.parse("SIP/2.0/TLS h.example")) == ("h.example", 5061)
    assert response_address(Via.parse("SIP/2.0/UDP h.example;rport"), ("1.2.3.4", 9)) == (
        "1.2.3.4",
        9,
    )


def test_response_accessors() -> None:
    resp = make_response(invite(), 486)
    wire = resp.serialize()
    assert wire.startswith(b"SIP/2.0 486 Busy Here\r\n")
    again = parse(wire)
    assert isinstance(again, SipResponse) and again.status == 486
    with pytest.raises(SipUsageError):
        SipResponse(700)
    with pytest.raises(SipUsageError):
        SipResponse(200, "OK\r\nX: y")


def test_expires_is_clamped_and_contact_wildcard() -> None:
    msg = invite()
    msg.headers.set("Expires", "1" + "0" * 60)
    assert msg.expires == 2**32 - 1
    msg.headers.set("Expires", "3600")
    assert msg.expires == 3600
    msg.headers.set("Contact", "*")
    assert msg.contact_is_wildcard and msg.contacts == []


def test_stream_framer_splits_messages_and_pings() -> None:
    framer = StreamFramer()
    stream = INVITE + b"\r\n\r\n" + INVITE.replace(b"v=0\n", b"v=1\n")
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames += framer.feed(stream[i : i + 1])
    assert frames == [INVITE, StreamFramer.PING, INVITE.replace(b"v=0\n", b"v=1\n")]
    assert framer.buffered == 0
    # a lone CRLF (pong) between messages is skipped
    assert framer.feed(b"\r\n" + INVITE) == [INVITE]
    # no Content-Length on a stream means no body
    bodyless = INVITE.replace(b"Content-Length: 4\r\n", b"").replace(b"v=0\n", b"")
    assert framer.feed(bodyless) == [bodyless]


def test_stream_framer_errors_close_the_stream() -> None:
    with pytest.raises(SipParseError):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 4\r\nl: 5"))
    with pytest.raises(SipParseError):
        StreamFramer().feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"))
    small = StreamFramer(SipLimits(max_message_bytes=100))
    with pytest.raises(SipParseError):
        small.feed(b"INVITE " + b"a" * 200)
    with pytest.raises(SipParseError):
        StreamFramer(SipLimits(max_message_bytes=400)).feed(
            INVITE.replace(b"Content-Length: 4", b"Content-Length: 9999")
        )


def test_name_addr_class_parse_alias() -> None:
    assert NameAddr.parse("<sip:a@b.example>").sip_uri.user == "a"
