"""Authenticator against a real local OIDC issuer (discovery + JWKS over HTTP) and real signed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from parley.api.auth import Authenticator, AuthError, KeyInfo, Principal, Role
from parley.config import Settings

AUD = "parley-api"
HS_SECRET = "an-hs256-secret-that-is-long-enough-for-sha256"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    return {"keys": [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ec_jwk, "kid": "ec-1", "use": "sig"}]}


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    """A minimal OIDC issuer on a free port: discovery document and JWKS."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    docs = {
        "/.well-known/openid-configuration": {"issuer": url, "jwks_uri": f"{url}/jwks.json"},
        "/jwks.json": _jwks(),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = docs.get(self.path)
            body = json.dumps(doc).encode()
            self.send_response(200 if doc else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


TENANTS: dict[str, uuid.UUID] = {}
KEY_TENANT = uuid.uuid4()
KEY_ID = uuid.uuid4()
KEYS = {"pk_live_abc123": KeyInfo(KEY_TENANT, KEY_ID, Role.editor, ("calls:write",))}


async def lookup_key(secret: str) -> KeyInfo | None:
    return KEYS.get(secret)


async def tenant_id_for(name: str) -> uuid.UUID:
    return TENANTS.setdefault(name, uuid.uuid4())


def make_auth(**settings: Any) -> Authenticator:
    return Authenticator(Settings(_env_file=None, **settings), lookup_key, tenant_id_for)


def oidc(issuer: str, discover: bool = True) -> Authenticator:
    extra = {} if discover else {"oidc_jwks_url": f"{issuer}/jwks.json"}
    return make_auth(oidc_issuer=issuer, oidc_audience=AUD, **extra)


def claims(issuer: str, **over: Any) -> dict[str, Any]:
    base = {"iss": issuer, "aud": AUD, "sub": "user-1", "tenant": "acme", "role": "editor", "exp": time.time() + 300}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A token PyJWT refuses to make: alg none, or HMAC keyed with a public key."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signing_input}.{sig}"


async def expect(auth: Authenticator, token: str, status: int = 401) -> AuthError:
    with pytest.raises(AuthError) as e:
        await auth.authenticate(f"Bearer {token}", None)
    assert e.value.status == status
    assert token not in e.value.message
    return e.value


@pytest.mark.parametrize("discover", [True, False])
async def test_rs256_and_es256_accepted(issuer: str, discover: bool) -> None:
    auth = oidc(issuer, discover)
    rs = jwt.encode(claims(issuer), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    p = await auth.authenticate(f"Bearer {rs}", None)
    assert p == Principal(TENANTS["acme"], Role.editor, "user-1", "jwt")
    es = jwt.encode(
        claims(issuer, tenant=None, tid="globex", role=None, roles=["owner", "admin"], aud=[AUD, "other"]),
        EC_KEY,
        algorithm="ES256",
        headers={"kid": "ec-1"},
    )
    p = await auth.authenticate(f"bearer {es}", None)
    assert (p.tenant_id, p.role, p.kind) == (TENANTS["globex"], Role.admin, "jwt")
    org = jwt.encode(claims(issuer, tenant=None, org_id="initech", role=None), EC_KEY, "ES256", {"kid": "ec-1"})
    p = await auth.authenticate(f"Bearer {org}", None)
    assert (p.tenant_id, p.role) == (TENANTS["initech"], Role.viewer)  # no role claim: least privilege


@pytest.mark.parametrize(
    "over",
    [
        {"iss": "https://evil.example"},
        {"aud": "someone-else"},
        {"aud": None},
        {"exp": time.time() - 120},
        {"exp": None},
    ],
    ids=["wrong-issuer", "wrong-audience", "no-audience", "expired", "no-exp"],
)
async def test_oidc_claims_checked(issuer: str, over: dict[str, Any]) -> None:
    token = jwt.encode(claims(issuer, **over), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    await expect(oidc(issuer), token)


async def test_leeway_tolerates_small_skew(issuer: str) -> None:
    token = jwt.encode(claims(issuer, exp=time.time() - 10), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await oidc(issuer).authenticate(f"Bearer {token}", None)).kind == "jwt"


async def test_unknown_or_missing_kid(issuer: str) -> None:
    auth = oidc(issuer)
    await expect(auth, jwt.encode(claims(issuer), RSA_KEY, algorithm="RS256", headers={"kid": "nope"}))
    await expect(auth, jwt.encode(claims(issuer), RSA_KEY, algorithm="RS256"))


async def test_alg_none_rejected(issuer: str) -> None:
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "none", "kid": "rsa-1"}):
        await expect(oidc(issuer), hand_signed(header, claims(issuer), None))
        await expect(make_auth(jwt_secret=HS_SECRET), hand_signed(header, claims(issuer), None))


async def test_algorithm_confusion_rejected(issuer: str) -> None:
    confused = hand_signed({"alg": "HS256", "kid": "rsa-1"}, claims(issuer), RSA_PUBLIC_PEM)
    await expect(oidc(issuer), confused)  # only OIDC configured: HS256 is not accepted at all
    both = make_auth(oidc_issuer=issuer, oidc_audience=AUD, jwt_secret=HS_SECRET)
    await expect(both, confused)  # HS256 is checked against the shared secret, never a public key
    plain_hs = jwt.encode(claims(issuer), HS_SECRET, algorithm="HS256")
    await expect(oidc(issuer), plain_hs)
    # header says ES256 but the kid names the RSA key
    es_on_rsa_kid = jwt.encode(claims(issuer), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    await expect(oidc(issuer), es_on_rsa_kid)


async def test_oidc_needs_audience(issuer: str) -> None:
    with pytest.raises(ValueError):
        make_auth(oidc_issuer=issuer)


async def test_hs256_with_secret() -> None:
    auth = make_auth(jwt_secret=HS_SECRET, jwt_issuer="idp", jwt_audience="parley")
    good = {"iss": "idp", "aud": "parley", "sub": "u", "tenant": "acme", "role": "admin", "exp": time.time() + 60}
    p = await auth.authenticate(f"Bearer {jwt.encode(good, HS_SECRET, algorithm='HS256')}", None)
    assert (p.tenant_id, p.role, p.subject) == (TENANTS["acme"], Role.admin, "u")
    await expect(auth, jwt.encode(good, "another-secret-of-sufficient-length-000000", algorithm="HS256"))
    await expect(auth, jwt.encode({**good, "iss": "other"}, HS_SECRET, algorithm="HS256"))
    await expect(auth, jwt.encode({**good, "aud": "other"}, HS_SECRET, algorithm="HS256"))
    no_exp = {k: v for k, v in good.items() if k != "exp"}
    await expect(auth, jwt.encode(no_exp, HS_SECRET, algorithm="HS256"))
    no_tenant = {k: v for k, v in good.items() if k != "tenant"}
    await expect(auth, jwt.encode(no_tenant, HS_SECRET, algorithm="HS256"), status=403)
    # no issuer/audience configured: neither is checked
    loose = make_auth(jwt_secret=HS_SECRET)
    assert (await loose.authenticate(f"Bearer {jwt.encode(good, HS_SECRET, algorithm='HS256')}", None)).kind == "jwt"


async def test_api_keys() -> None:
    auth = make_auth()
    expected = Principal(KEY_TENANT, Role.editor, str(KEY_ID), "api_key", ("calls:write",), KEY_ID)
    assert await auth.authenticate("Bearer pk_live_abc123", None) == expected
    assert await auth.authenticate(None, "pk_live_abc123") == expected
    assert await auth.authenticate("Bearer pk_live_abc123", "pk_live_abc123") == expected
    for authz, key in [("Bearer pk_live_wrong", None), (None, "pk_live_wrong"), ("Bearer pk_live_abc123", "pk_x")]:
        with pytest.raises(AuthError) as e:
            await auth.authenticate(authz, key)
        assert e.value.status == 401 and "pk_" not in e.value.message


@pytest.mark.parametrize(
    ("authz", "key"), [(None, None), ("", ""), ("Bearer ", None), ("Basic dXNlcjpwYXNz", None), ("Bearer junk", None)]
)
async def test_missing_or_unusable_credentials(authz: str | None, key: str | None) -> None:
    with pytest.raises(AuthError) as e:
        await make_auth(jwt_secret=HS_SECRET).authenticate(authz, key)
    assert e.value.status == 401


def test_roles() -> None:
    assert Role.admin.allows(Role.editor) and Role.admin.allows(Role.viewer) and Role.admin.allows(Role.admin)
    assert Role.editor.allows(Role.viewer) and not Role.editor.allows(Role.admin)
    assert not Role.viewer.allows(Role.editor)


async def test_talk_tokens() -> None:
    secret = "talk-secret-talk-secret-talk-secret-0123"
    auth = make_auth(token_secret=secret, jwt_secret=secret)
    owner = Principal(uuid.uuid4(), Role.editor, "user-9", "jwt")
    agent = uuid.uuid4()
    token = auth.issue_talk_token(owner, agent)
    p = auth.verify_talk_token(token, agent)
    assert p == Principal(owner.tenant_id, Role.editor, "user-9", "talk_token", agent_id=agent)
    # another worker with the same PARLEY_TOKEN_SECRET accepts it; one without does not
    assert make_auth(token_secret=secret).verify_talk_token(token, agent) == p
    with pytest.raises(AuthError):
        make_auth().verify_talk_token(token, agent)

    with pytest.raises(AuthError) as e:
        auth.verify_talk_token(token, uuid.uuid4())
    assert e.value.status == 403

    body = jwt.decode(token, secret, algorithms=["HS256"], audience="parley-talk")
    expired = jwt.encode({**body, "exp": int(time.time()) - 60}, secret, algorithm="HS256")
    wrong_aud = jwt.encode({**body, "aud": "parley-api"}, secret, algorithm="HS256")
    head, _, sig = token.split(".")
    forged_payload = b64(json.dumps({**body, "role": "admin"}).encode())
    for bad in (expired, wrong_aud, f"{head}.{forged_payload}.{sig}", token[:-2] + "AA", "garbage"):
        with pytest.raises(AuthError) as e:
            auth.verify_talk_token(bad, agent)
        assert e.value.status == 401

    await expect(auth, token)  # a talk token is no API credential, even when the secrets coincide
    with pytest.raises(AuthError):
        auth.issue_talk_token(p, agent)  # talk tokens cannot mint more


def test_generated_talk_secret_is_per_process() -> None:
    owner = Principal(uuid.uuid4(), Role.viewer, "k", "api_key")
    agent = uuid.uuid4()
    a = make_auth()
    assert a.verify_talk_token(a.issue_talk_token(owner, agent, ttl_s=5), agent).agent_id == agent
    with pytest.raises(AuthError):
        make_auth().verify_talk_token(a.issue_talk_token(owner, agent), agent)
