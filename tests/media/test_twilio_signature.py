from __future__ import annotations

import pytest

from voxgate.media.twilio_signature import compute_signature, url_variants, validate_signature

# The example from Twilio's request-validation documentation.
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
DOC_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_documented_vector() -> None:
    assert compute_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)


def test_param_order_irrelevant_and_pairs_accepted() -> None:
    pairs = list(reversed(list(DOC_PARAMS.items())))
    assert compute_signature(DOC_TOKEN, DOC_URL, pairs) == DOC_SIGNATURE


def test_wrong_token_url_param_or_signature_rejected() -> None:
    assert not validate_signature("54321", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not validate_signature(DOC_TOKEN, DOC_URL + "&x=1", DOC_PARAMS, DOC_SIGNATURE)
    assert not validate_signature(DOC_TOKEN, DOC_URL, {**DOC_PARAMS, "To": "+1"}, DOC_SIGNATURE)
    assert not validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, None)
    assert not validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, "")
    assert not validate_signature("", DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-2] + "A=")


def test_empty_values_are_signed() -> None:
    with_empty = {**DOC_PARAMS, "CallerName": ""}
    sig = compute_signature(DOC_TOKEN, DOC_URL, with_empty)
    assert sig != DOC_SIGNATURE
    assert validate_signature(DOC_TOKEN, DOC_URL, with_empty, sig)
    assert not validate_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS, sig)


def test_repeated_params_all_included() -> None:
    one = compute_signature("t", "https://h/x", [("A", "1")])
    two = compute_signature("t", "https://h/x", [("A", "1"), ("A", "2")])
    assert one != two
    assert two == compute_signature("t", "https://h/x", {"A": ["2", "1"]})
    assert two == compute_signature("t", "https://h/x", [("A", "2"), ("A", "1")])


@pytest.mark.parametrize(
    ("signed_url", "received_url"),
    [
        ("https://example.com:443/twilio/webhook", "https://example.com/twilio/webhook"),
        ("https://example.com/twilio/webhook", "https://example.com:443/twilio/webhook"),
        ("http://example.com:8080/twilio/webhook", "http://example.com:8080/twilio/webhook"),
        ("http://example.com/twilio/webhook?a=b", "http://example.com:8080/twilio/webhook?a=b"),
        ("http://example.com:80/twilio/webhook", "http://example.com/twilio/webhook"),
    ],
)
def test_port_and_no_port_both_accepted(signed_url: str, received_url: str) -> None:
    sig = compute_signature("tok", signed_url, {"CallSid": "CA1"})
    assert validate_signature("tok", received_url, {"CallSid": "CA1"}, sig)


def test_different_non_default_port_rejected() -> None:
    sig = compute_signature("tok", "http://example.com:8081/w", {})
    assert not validate_signature("tok", "http://example.com:8080/w", {}, sig)


def test_url_variants() -> None:
    assert url_variants("https://a.b/x?y=1") == ["https://a.b/x?y=1", "https://a.b:443/x?y=1"]
    assert url_variants("http://a.b:8080/x") == ["http://a.b:8080/x", "http://a.b/x"]
    assert url_variants("http://[::1]:8080/x") == ["http://[::1]:8080/x", "http://[::1]/x"]
    assert url_variants("http://a.b:notaport/x") == ["http://a.b:notaport/x"]
