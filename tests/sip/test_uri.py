from __future__ import annotations

import pytest

from voxgate.sip.errors import SipParseError
from voxgate.sip.uri import AbsoluteUri, SipUri, parse_sip_uri, parse_uri


def test_full_sip_uri() -> None:
    uri = parse_sip_uri("sips:alice:secret@Example.COM:5061;transport=TCP;lr?subject=hi&x=y")
    assert uri.scheme == "sips"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("Example.COM", 5061)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp" and uri.lr
    assert uri.headers == [("subject", "hi"), ("x", "y")]
    assert str(uri) == "sips:alice:secret@Example.COM:5061;transport=TCP;lr?subject=hi&x=y"


def test_host_only_and_ipv4() -> None:
    uri = parse_sip_uri("sip:192.0.2.1")
    assert uri.user is None and uri.host == "192.0.2.1" and uri.port is None
    assert str(uri) == "sip:192.0.2.1"


def test_ipv6_reference_is_stored_unbracketed() -> None:
    uri = parse_sip_uri("sip:+15551234@[2001:db8::10]:5070;user=phone")
    assert uri.host == "2001:db8::10"
    assert uri.port == 5070
    assert uri.hostport == "[2001:db8::10]:5070"
    assert str(uri) == "sip:+15551234@[2001:db8::10]:5070;user=phone"


def test_escapes_decoded_once_and_reencoded() -> None:
    uri = parse_sip_uri("sip:I%20have%20spaces@example.net;name=v%61lue%25%34%31")
    assert uri.user == "I have spaces"
    assert uri.params["name"] == "value%41"
    printed = str(uri)
    assert printed == "sip:I%20have%20spaces@example.net;name=value%2541"
    assert parse_sip_uri(printed) == uri


def test_non_utf8_escape_round_trips() -> None:
    uri = parse_sip_uri("sip:a%FFb@example.com")
    assert str(uri) == "sip:a%FFb@example.com"


def test_user_part_may_hold_semicolon_and_question_mark() -> None:
    uri = parse_sip_uri("sip:user;par=u%40example.net@example.com;transport=udp")
    assert uri.user == "user;par=u@example.net"
    assert uri.params == {"transport": "udp"}


def test_other_schemes_are_opaque() -> None:
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, AbsoluteUri)
    assert tel.scheme == "tel"
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    with pytest.raises(SipParseError):
        parse_sip_uri("tel:+1555")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@example.com",
        "example.com",
        "<sip:a@example.com>",
        "sip:a@exa mple.com",
        "sip:a@example.com:70000",
        "sip:a@example.com:5x",
        "sip:a%G1@example.com",
        "sip:a%4@example.com",
        "sip:a@[2001:db8::1",
        "sip:a@[not-ipv6]",
        "sip:a@999.1.1.1",
        "sip:a@example.com;;lr",
        "sip:a@example.com;x=",
        "sip:a@example.com?noequals",
        "sip:a b@example.com",
        "1sip:a@example.com",
        "tel:",
    ],
)
def test_malformed_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_equivalence_rules_of_rfc3261() -> None:
    a = parse_sip_uri("sip:%61lice@ATLANTA.com;transport=TCP")
    b = parse_sip_uri("sip:alice@AtLanTa.CoM;Transport=tcp")
    assert a.equivalent(b)
    # A transport present on one side only makes them differ...
    assert not parse_sip_uri("sip:bob@biloxi.com").equivalent(
        parse_sip_uri("sip:bob@biloxi.com;transport=udp")
    )
    # ...but other parameters only count when both sides have them.
    assert parse_sip_uri("sip:carol@chicago.com").equivalent(
        parse_sip_uri("sip:carol@chicago.com;newparam=5")
    )
    assert not parse_sip_uri("sip:alice@atlanta.com").equivalent(
        parse_sip_uri("sip:ALICE@atlanta.com")
    )
    assert not parse_sip_uri("sip:bob@biloxi.com").equivalent(
        parse_sip_uri("sip:bob@biloxi.com:5060")
    )
    assert not a.equivalent(AbsoluteUri("tel", "+1"))


def test_copy_is_independent() -> None:
    uri = SipUri(host="example.com", user="bob", params={"lr": None})
    clone = uri.copy(port=5080)
    clone.params["x"] = "1"
    assert uri.params == {"lr": None}
    assert str(clone) == "sip:bob@example.com:5080;lr;x=1"
