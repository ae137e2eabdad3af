"""Digest authentication answers, checked against the worked examples of RFC 2617 and RFC 7616."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.sip.protocol.digest import DigestError, authorization, choose_challenge, parse_challenge

RFC7616 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def params(header: str) -> dict[str, str]:
    from parley.sip.protocol.digest import _auth_params

    assert header.startswith("Digest ")
    return _auth_params(header[len("Digest ") :])


@pytest.mark.parametrize(
    "alg,response",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(alg: str, response: str) -> None:
    challenge = parse_challenge(RFC7616.format(alg=alg))
    header = authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=CNONCE)
    p = params(header)
    assert p["response"] == response
    assert p["qop"] == "auth" and p["nc"] == "00000001" and p["cnonce"] == CNONCE
    assert p["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS" and p["algorithm"] == alg


def test_rfc2617_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b")
    assert params(header)["response"] == "6629fae49393a05397450978507c4ef1"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_no_qop_is_the_rfc2069_response() -> None:
    challenge = parse_challenge('Digest realm="asterisk",nonce="4f6b1d2a"')
    header = authorization(challenge, "INVITE", "sip:+15551@trunk", "parley", "pw")
    ha1, ha2 = md5("parley:asterisk:pw"), md5("INVITE:sip:+15551@trunk")
    p = params(header)
    assert p["response"] == md5(f"{ha1}:4f6b1d2a:{ha2}") and "qop" not in p and "cnonce" not in p


def test_session_variant_and_auth_int() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth-int"')
    header = authorization(challenge, "INVITE", "sip:x@y", "u", "p", body=b"v=0\r\n", cnonce="c", nc=2)
    ha1 = md5(f"{md5('u:r:p')}:n:c")
    ha2 = md5(f"INVITE:sip:x@y:{hashlib.md5(b'v=0' + bytes([13, 10])).hexdigest()}")
    p = params(header)
    assert p["response"] == md5(f"{ha1}:n:00000002:c:auth-int:{ha2}") and p["algorithm"] == "MD5-sess"


def test_the_strongest_challenge_wins_and_unknown_ones_are_skipped() -> None:
    chosen = choose_challenge(
        [
            'Basic realm="x"',
            'Digest realm="r", nonce="1", algorithm=MD5',
            'Digest realm="r", nonce="2", algorithm=SHA-256',
            'Digest realm="r", nonce="3", algorithm=UNKNOWN-HASH',
        ]
    )
    assert chosen.algorithm == "SHA-256" and chosen.nonce == "2"
    with pytest.raises(DigestError):
        choose_challenge(['Basic realm="x"'])


def test_quoted_commas_escapes_and_stale() -> None:
    c = parse_challenge('Digest realm="a, \\"b\\"", nonce="x,y", stale=TRUE, qop="auth"')
    assert c.realm == 'a, "b"' and c.nonce == "x,y" and c.stale and c.qop == ("auth",)
    header = authorization(c, "INVITE", "sip:q", 'us"er', "p")
    assert params(header)["username"] == 'us"er' and params(header)["realm"] == 'a, "b"'


@pytest.mark.parametrize(
    "bad",
    ['Basic realm="x"', 'Digest nonce="1"', 'Digest realm="r"', "Digest realm=", 'Digest realm="r, nonce=1'],
)
def test_challenges_parley_cannot_answer(bad: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_challenges(text: str) -> None:
    for header in (text, "Digest " + text):
        try:
            authorization(parse_challenge(header), "INVITE", "sip:x@y", "u", "p")
        except DigestError:
            pass
