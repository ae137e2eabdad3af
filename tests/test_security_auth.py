"""Security regressions for credentials (issue 8, findings 10-13 and 15), against a real `parley serve`.

Each test runs an attack the probe found and checks it is refused: keys minting broader keys, talk tokens used
twice or after their key is revoked, the talk socket outside the per-key rate limit, X-Forwarded-For believed
from anyone, a nested JSON frame ending a call, JWTs that never expire, and refusals the browser cannot read.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets

from parley.api.auth import Authenticator, AuthError, Principal, Role
from parley.config import Settings
from parley.store.nonces import NonceStore

from .support.service import Service, running_service

JWT_SECRET = "jwt-secret-for-security-tests-0123456789abcdef"
AGENT = {"name": "desk", "system_prompt": "-", "greeting": "", "llm": {"provider": "canned"},
         "tts": {"provider": "tone"}, "vad": {"provider": "energy"}}  # fmt: skip
PER_KEY = 10  # handshakes and requests one key may make per minute on the main service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(
        tmp_path_factory.mktemp("security-auth"),
        PARLEY_JWT_SECRET=JWT_SECRET,
        PARLEY_RATE_LIMIT_PER_KEY=f"{PER_KEY}/minute",
        PARLEY_RATE_LIMIT_PER_ADDRESS="100000/minute",
    ) as svc:
        yield svc


def ws_url(service: Service, path: str) -> str:
    return service.url.replace("http", "ws") + path


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def new_agent(service: Service, key: str, **headers: str) -> dict[str, Any]:
    with service.client(key) as c:
        r = c.post("/v1/agents", json=AGENT, headers=headers)
        assert r.status_code == 201, r.text
        return dict(r.json())


async def session(url: str, headers: dict[str, str] | None = None, frames: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Open a talk session, send ``frames`` then hang up; the events received until ``end``."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers or {}, max_size=2**20) as ws:
        for frame in frames:
            await ws.send(frame)
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            if isinstance(message, str):
                events.append(json.loads(message))
                if events[-1]["type"] == "end":
                    break
    return events


async def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The close code and reason of a refused session (an HTTP 403 instead raises InvalidStatus: a failure)."""
    try:
        async with websockets.connect(url, additional_headers=headers or {}) as ws:
            first = await asyncio.wait_for(ws.recv(), 30)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError(f"the session was not refused: {first!r}")


# --- finding 10: a key cannot mint a key with more power than its own --------------------------------------------
def test_a_keys_scoped_key_cannot_create_broader_keys(service: Service) -> None:
    admin = service.create_key(f"keys-{secrets.token_hex(3)}")
    with service.client(admin) as c:
        narrow = c.post("/v1/keys", json={"name": "key manager", "role": "admin", "scopes": ["keys"]}).json()
    with service.client(narrow["secret"]) as n:
        unscoped = n.post("/v1/keys", json={"name": "escalate", "role": "admin"})
        assert unscoped.status_code == 403 and "scopes" in unscoped.json()["detail"]
        assert n.post("/v1/keys", json={"name": "e2", "role": "admin", "scopes": ["agents:write"]}).status_code == 403
        assert n.post("/v1/keys", json={"name": "e3", "scopes": ["keys", "talk"]}).status_code == 403
        # within its own scopes (and a lower role) it still works
        assert n.post("/v1/keys", json={"name": "ok", "role": "admin", "scopes": ["keys"]}).status_code == 201
        assert n.post("/v1/keys", json={"name": "ok2", "role": "editor", "scopes": ["keys"]}).status_code == 201
    # the same for a JWT carrying the keys scope
    claims = {"sub": "ops", "tenant": "keys-jwt", "role": "admin", "scope": "openid keys", "exp": time.time() + 60}
    with service.client(jwt.encode(claims, JWT_SECRET, algorithm="HS256")) as j:
        assert j.post("/v1/keys", json={"name": "escalate", "role": "admin"}).status_code == 403
        assert j.post("/v1/keys", json={"name": "ok", "role": "admin", "scopes": ["keys"]}).status_code == 201


# --- finding 11: one session per talk token, and none once its key is revoked ------------------------------------
def test_a_talk_token_opens_one_session_even_when_used_at_once(service: Service) -> None:
    admin = service.create_key(f"once-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)
    with service.client(admin) as c:
        token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()

    async def attempt() -> str:
        try:
            async with websockets.connect(ws_url(service, token["url"])) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 30))
                await asyncio.sleep(0.5)  # hold the session while the others try
                await ws.send(json.dumps({"type": "end"}))
                return str(first["type"])
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1008, exc
            return exc.rcvd.reason

    async def all_at_once() -> list[str]:
        return list(await asyncio.gather(*(attempt() for _ in range(4))))

    outcomes = asyncio.run(all_at_once())
    assert sorted(outcomes) == ["call"] + ["talk token already used"] * 3, outcomes
    assert asyncio.run(refusal(ws_url(service, token["url"]))) == (1008, "talk token already used")
    # nor does the same token spelled differently (the signature's last base64 character carries 2 unused bits):
    # the one-use key is the token's id, not its text
    head, _, sig = token["token"].rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = f"{head}.{sig[:-1]}{alphabet[alphabet.index(sig[-1]) ^ 1]}"
    url = ws_url(service, f"/v1/agents/{agent['id']}/talk?token={respelled}")
    assert asyncio.run(refusal(url))[0] == 1008


def test_a_talk_token_dies_with_the_key_that_minted_it(service: Service) -> None:
    admin = service.create_key(f"revoke-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)
    with service.client(admin) as c:
        talker = c.post("/v1/keys", json={"name": "talker", "role": "viewer", "scopes": ["talk"]}).json()
    with service.client(talker["secret"]) as t:
        token = t.post(f"/v1/agents/{agent['id']}/talk-token").json()
        spare = t.post(f"/v1/agents/{agent['id']}/talk-token").json()
    assert asyncio.run(session(ws_url(service, spare["url"])))[0]["type"] == "call"  # it worked before
    with service.client(admin) as c:
        assert c.delete(f"/v1/keys/{talker['id']}").status_code == 204
    code, reason = asyncio.run(refusal(ws_url(service, token["url"])))
    assert code == 1008 and "revoked" in reason


# --- finding 12: the per-key rate limit holds on the socket; X-Forwarded-For needs a trusted proxy ----------------
def test_the_talk_handshake_counts_against_the_key_rate_limit(service: Service) -> None:
    admin = service.create_key(f"limited-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)  # one of the key's PER_KEY
    url = ws_url(service, f"/v1/agents/{agent['id']}/talk")
    for _ in range(PER_KEY - 1):
        assert asyncio.run(session(url, bearer(admin)))[-1]["type"] == "end"
    assert asyncio.run(refusal(url, bearer(admin))) == (1013, "rate limit exceeded")


def test_x_forwarded_for_is_not_believed_by_default(service: Service) -> None:
    admin = service.create_key(f"xff-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)
    url = ws_url(service, f"/v1/agents/{agent['id']}/talk")
    events = asyncio.run(session(url, bearer(admin, **{"X-Forwarded-For": "203.0.113.7"})))
    with service.client(admin) as c:
        call = c.get(f"/v1/calls/{events[-1]['call_id']}").json()
    assert call["caller"] == "127.0.0.1"


def test_x_forwarded_for_from_a_trusted_proxy_gives_the_right_most_untrusted_hop(tmp_path: Path) -> None:
    with running_service(
        tmp_path, PARLEY_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8", PARLEY_RATE_LIMIT_PER_ADDRESS="3/minute"
    ) as svc:
        with svc.client() as c:

            def status(xff: str) -> int:
                return c.get("/v1/agents", headers={"X-Forwarded-For": xff}).status_code

            # the client writes what it likes on the left; the proxies' hops (10.x) are skipped
            assert [status(f"192.0.2.{i}, 203.0.113.5, 10.1.1.1") for i in range(3)] == [401] * 3
            assert status("192.0.2.99, 203.0.113.5, 10.1.1.1") == 429
            assert status("203.0.113.5") == 429
            assert status("203.0.113.6, 10.2.2.2") == 401  # another client behind the proxy: its own budget
        admin = svc.create_key("behind-proxy")
        agent = new_agent(svc, admin, **{"X-Forwarded-For": "198.51.100.1"})
        hop = {"X-Forwarded-For": "192.0.2.1, 198.51.100.2"}
        events = asyncio.run(session(ws_url(svc, f"/v1/agents/{agent['id']}/talk"), bearer(admin, **hop)))
        with svc.client(admin) as c:
            call = c.get(f"/v1/calls/{events[-1]['call_id']}", headers={"X-Forwarded-For": "198.51.100.3"}).json()
        assert call["caller"] == "198.51.100.2"


# --- finding 13: a bad text frame is an error event; the call goes on --------------------------------------------
def test_a_deeply_nested_or_huge_text_frame_is_an_error_event(service: Service) -> None:
    admin = service.create_key(f"nested-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)
    frames = ["[" * 100_000, json.dumps({"type": "dtmf", "digit": "1" * 50_000}), json.dumps([1])]
    events = asyncio.run(session(ws_url(service, f"/v1/agents/{agent['id']}/talk"), bearer(admin), frames))
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 3, events
    assert events[-1]["type"] == "end" and events[-1]["reason"] == "caller-hangup"


# --- finding 15: JWT lifetime is capped; refused handshakes close with 1008 and a reason --------------------------
@pytest.mark.parametrize(
    ("iat", "exp", "accepted"),
    [
        (0, 3600, True),
        (0, 253402300799 - time.time(), False),  # 9999-12-31
        (0, 2 * 86_400, False),
        (None, 2 * 86_400, False),  # no iat: measured from now
        (253402300000 - time.time(), 253402300799 - time.time(), False),  # issued in the far future
    ],
    ids=["one-hour", "year-9999", "two-days", "two-days-no-iat", "issued-in-9999"],
)
def test_jwt_lifetime_is_capped(service: Service, iat: float | None, exp: float, accepted: bool) -> None:
    now = time.time()
    claims: dict[str, Any] = {"sub": "u", "tenant": f"jwt-{secrets.token_hex(3)}", "role": "admin", "exp": now + exp}
    if iat is not None:
        claims["iat"] = now + iat
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    with service.client(token) as c:
        r = c.get("/v1/agents")
    assert r.status_code == (200 if accepted else 401), r.text


def test_refused_talk_handshakes_close_with_1008_and_a_reason(service: Service) -> None:
    admin = service.create_key(f"refused-{secrets.token_hex(3)}")
    agent = new_agent(service, admin)
    url = ws_url(service, f"/v1/agents/{agent['id']}/talk")
    assert asyncio.run(refusal(url + "?token=not-a-token")) == (1008, "invalid talk token")
    code, reason = asyncio.run(refusal(url, bearer("pk_not_a_key")))
    assert (code, reason) == (1008, "invalid API key")
    code, reason = asyncio.run(refusal(ws_url(service, "/v1/agents/no-such-agent/talk"), bearer(admin)))
    assert code == 1008 and "not found" in reason


# --- the same one-use rule across workers: two processes' worth of Authenticator and NonceStore on one Redis ------
async def test_a_talk_token_is_spent_once_across_workers_sharing_redis() -> None:
    async def no_lookup(_: str) -> None:
        return None

    async def no_tenant(_: str) -> uuid.UUID:
        return uuid.uuid4()

    settings = Settings(token_secret=JWT_SECRET, redis_url="redis://127.0.0.1:6379/0")
    workers = [(Authenticator(settings, no_lookup, no_tenant), NonceStore(settings.redis_url)) for _ in range(2)]
    revoked: set[uuid.UUID] = set()

    async def key_is_live(_tenant: uuid.UUID, key_id: uuid.UUID) -> bool:
        return key_id not in revoked

    owner = Principal(uuid.uuid4(), Role.editor, "k", "api_key", key_id=uuid.uuid4())
    agent = uuid.uuid4()
    try:
        (auth_a, nonces_a), (auth_b, nonces_b) = workers
        token = auth_a.issue_talk_token(owner, agent)
        assert (await auth_b.redeem_talk_token(token, agent, nonces_b.use, key_is_live)).key_id == owner.key_id
        with pytest.raises(AuthError, match="already used"):
            await auth_a.redeem_talk_token(token, agent, nonces_a.use, key_is_live)
        revoked.add(owner.key_id)  # type: ignore[arg-type]
        with pytest.raises(AuthError, match="revoked"):
            await auth_a.redeem_talk_token(auth_a.issue_talk_token(owner, agent), agent, nonces_a.use, key_is_live)
    finally:
        for _, nonces in workers:
            await nonces.aclose()
