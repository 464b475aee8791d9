from __future__ import annotations

import pytest

from voxgate.sip.digest import (
    DigestChallenge,
    DigestClient,
    DigestServer,
    DigestVerdict,
    parse_auth_params,
    parse_challenge,
    parse_credentials,
    select_challenge,
)
from voxgate.sip.errors import DigestError

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_rfc2617_section_3_5_md5_example() -> None:
    challenge = parse_challenge(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int")
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    header = client.authorize(challenge, "GET", "/dir/index.html")
    creds = parse_credentials(header)
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.nc == "00000001" and creds.qop == "auth" and creds.cnonce == "0a4f113b"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds.algorithm == "MD5"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    challenges = [
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={a}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
        for a in ("SHA-256", "MD5")
    ]
    chosen = select_challenge(challenges)
    assert chosen.algorithm == "SHA-256"  # strongest offered wins
    challenge = parse_challenge(challenges[0 if algorithm == "SHA-256" else 1])
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    creds = parse_credentials(client.authorize(challenge, "GET", "/dir/index.html"))
    assert creds.response == expected
    assert creds.algorithm == algorithm


def test_nonce_count_increments_per_nonce_and_resets_on_new_nonce() -> None:
    client = DigestClient("u", "p")
    first = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    counts = [parse_credentials(client.authorize(first, "REGISTER", "sip:r")).nc for _ in range(3)]
    assert counts == ["00000001", "00000002", "00000003"]
    second = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    assert parse_credentials(client.authorize(second, "REGISTER", "sip:r")).nc == "00000001"
    cnonces = {parse_credentials(client.authorize(second, "X", "sip:r")).cnonce for _ in range(4)}
    assert len(cnonces) == 4
    assert "p" not in repr(client) or "***" in repr(client)


def test_rfc2069_challenge_without_qop() -> None:
    challenge = DigestChallenge(
        realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"
    )
    creds = parse_credentials(
        DigestClient("Mufasa", "CircleOfLife").authorize(challenge, "GET", "/dir/index.html")
    )
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    # the example response of RFC 2069 §2.4 (password "CircleOfLife")
    assert creds.response == "1949323746fe6a43ef61f9606e7febea"


def test_select_challenge_skips_unusable() -> None:
    with pytest.raises(DigestError):
        select_challenge(['Basic realm="x"', 'Digest realm="r", nonce="n", algorithm=FOO'])
    picked = select_challenge(['Basic realm="x"', 'Digest realm="r", nonce="n"'])
    assert picked.algorithm == "MD5"


@pytest.mark.parametrize(
    "header",
    [
        'Digest realm="r"',
        'Digest nonce="n"',
        'Basic realm="r"',
        'Digest realm="r, nonce="n"',
        "Digest realm=, nonce=n",
        'Digest realm="r" nonce="n"',
        'Digest realm="r", realm="s", nonce="n"',
        'Digest realm="r", nonce="n", algorithm=SHA-1',
    ],
)
def test_malformed_challenges(header: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(header)


def test_auth_params_quoting() -> None:
    params = parse_auth_params(r'a="x\"y, z", B=tok ,c="" ')
    assert params == {"a": 'x"y, z', "b": "tok", "c": ""}


def test_credentials_parsing_errors() -> None:
    with pytest.raises(DigestError):
        parse_credentials(None)
    with pytest.raises(DigestError):
        parse_credentials("NoOneKnowsThisScheme opaque-data=here")
    with pytest.raises(DigestError):
        parse_credentials('Digest username="u", realm="r", nonce="n", uri="sip:x"')
    with pytest.raises(DigestError):
        parse_credentials(
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="1", qop=auth'
        )


SECRET = b"0123456789abcdef0123456789abcdef"


def server_round(
    server: DigestServer, now: float, password: str = "pw", algorithm_index: int = 0
) -> tuple[DigestClient, DigestChallenge]:
    challenge = parse_challenge(server.challenges(now)[algorithm_index])
    return DigestClient("alice", password), challenge


@pytest.mark.parametrize("index", [0, 1])
def test_server_accepts_good_credentials_for_each_algorithm(index: int) -> None:
    server = DigestServer(secret=SECRET, realm="voxgate")
    client, challenge = server_round(server, 1000.0, algorithm_index=index)
    assert challenge.algorithm == ("SHA-256", "MD5")[index]
    creds = parse_credentials(client.authorize(challenge, "INVITE", "sip:100@voxgate"))
    assert server.verify(creds, "INVITE", password="pw", now=1001.0) is DigestVerdict.ACCEPTED
    # the next request with the same nonce and a higher nc is fine too
    creds2 = parse_credentials(client.authorize(challenge, "BYE", "sip:100@voxgate"))
    assert server.verify(creds2, "BYE", password="pw", now=1002.0) is DigestVerdict.ACCEPTED


def test_server_rejects_replay_wrong_password_method_and_realm() -> None:
    server = DigestServer(secret=SECRET, realm="voxgate")
    client, challenge = server_round(server, 1000.0)
    creds = parse_credentials(client.authorize(challenge, "INVITE", "sip:100@voxgate"))
    assert server.verify(creds, "INVITE", password="pw", now=1001.0) is DigestVerdict.ACCEPTED
    assert server.verify(creds, "INVITE", password="pw", now=1001.0) is DigestVerdict.REJECTED
    bad_client = DigestClient("alice", "wrong")
    bad = parse_credentials(bad_client.authorize(challenge, "INVITE", "sip:100@voxgate"))
    assert server.verify(bad, "INVITE", password="pw", now=1001.0) is DigestVerdict.REJECTED
    other = parse_credentials(client.authorize(challenge, "INVITE", "sip:100@voxgate"))
    assert server.verify(other, "BYE", password="pw", now=1001.0) is DigestVerdict.REJECTED
    assert server.verify(other, "INVITE", password=None, now=1001.0) is DigestVerdict.REJECTED
    foreign = DigestServer(secret=SECRET, realm="elsewhere")
    assert foreign.verify(other, "INVITE", password="pw", now=1001.0) is DigestVerdict.REJECTED


def test_server_rejects_forged_nonce_and_other_secret() -> None:
    server = DigestServer(secret=SECRET, realm="voxgate")
    forged = DigestChallenge(realm="voxgate", nonce="AAAAAAAAAAAAAAAAAAAAAAAA", qop=("auth",))
    creds = parse_credentials(DigestClient("alice", "pw").authorize(forged, "INVITE", "sip:x"))
    assert server.verify(creds, "INVITE", password="pw", now=1.0) is DigestVerdict.REJECTED
    other = DigestServer(secret=b"x" * 32, realm="voxgate")
    client, challenge = server_round(other, 1000.0)
    creds = parse_credentials(client.authorize(challenge, "INVITE", "sip:x"))
    assert server.verify(creds, "INVITE", password="pw", now=1000.0) is DigestVerdict.REJECTED


def test_stale_nonce_then_fresh_challenge() -> None:
    server = DigestServer(secret=SECRET, realm="voxgate", nonce_ttl=60)
    client, challenge = server_round(server, 1000.0)
    creds = parse_credentials(client.authorize(challenge, "REGISTER", "sip:voxgate"))
    assert server.verify(creds, "REGISTER", password="pw", now=1061.0) is DigestVerdict.STALE
    fresh_values = server.challenges(1061.0, stale=True)
    fresh = parse_challenge(fresh_values[0])
    assert fresh.stale
    creds = parse_credentials(client.authorize(fresh, "REGISTER", "sip:voxgate"))
    assert server.verify(creds, "REGISTER", password="pw", now=1062.0) is DigestVerdict.ACCEPTED
    # a nonce dated in the future is not ours
    future = parse_challenge(server.challenges(5000.0)[0])
    creds = parse_credentials(client.authorize(future, "REGISTER", "sip:voxgate"))
    assert server.verify(creds, "REGISTER", password="pw", now=1000.0) is DigestVerdict.REJECTED


def test_server_configuration_checks() -> None:
    with pytest.raises(ValueError):
        DigestServer(secret=b"short", realm="r")
    with pytest.raises(DigestError):
        DigestServer(secret=SECRET, realm="r", algorithms=("SHA-1",))
    server = DigestServer(secret=SECRET, realm="r", max_tracked_nonces=3)
    for i in range(10):
        client, challenge = server_round(server, 1000.0 + i)
        creds = parse_credentials(client.authorize(challenge, "OPTIONS", "sip:r"))
        server.verify(creds, "OPTIONS", password="pw", now=1000.0 + i)
    assert len(server._seen) <= 3
    assert "0123456789" not in repr(server)


def test_auth_int_and_sess_variants_verify() -> None:
    challenge = DigestChallenge(realm="r", nonce="n", algorithm="SHA-256-SESS", qop=("auth-int",))
    client = DigestClient("u", "p", cnonce_factory=lambda: "c")
    creds = parse_credentials(client.authorize(challenge, "MESSAGE", "sip:r", body=b"hello"))
    assert creds.qop == "auth-int" and creds.algorithm == "SHA-256-SESS"
    assert len(creds.response) == 64
    with pytest.raises(DigestError):
        client.authorize(DigestChallenge(realm="r", nonce="n", qop=("weird",)), "X", "sip:r")
