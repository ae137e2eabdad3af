"""Caller memory keyed by a client-given user id (``user:<id>``): an app's logged-in user is remembered across talk
sessions like a phone caller. Live calls through the real pipeline (energy VAD, canned STT/LLM, tone TTS: no
models) on SQLite and PostgreSQL, and the talk WebSocket on a real ``parley serve``: the id signed into a talk
token (no query parameter can override it), or ``?user_id=`` from a header-authenticated client.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from parley.api.auth import Principal, Role
from parley.config import Settings
from parley.store.db import Database
from parley.store.memories import KEY_MAX, MemoryRepo, memory_key, named_key, user_key

from .support.service import Service
from .support.store import db, new_tenant  # noqa: F401 (the fixture)
from .test_caller_memory import NUMBER, agent, call_from, caller_audio

LONG_ID = "u" * 64  # too long for `user:` and itself in the 64-character column: stored as a digest
RETURNING = {"summary": "A returning user, remembered across sessions.", "facts": {"name": "Ada"}}


def test_user_keys_win_over_numbers_and_fit_the_column() -> None:
    assert user_key("alice@example.com") == "user:alice@example.com" == named_key("user:alice@example.com")
    assert memory_key(NUMBER, "alice") == "user:alice" and memory_key(NUMBER, None) == NUMBER
    assert memory_key("127.0.0.1", None) is None and memory_key("127.0.0.1", "a") == "user:a"
    long = user_key(LONG_ID)
    assert len(long) == KEY_MAX and long.startswith("user:#") and long != user_key(LONG_ID[:-1])
    assert named_key(f"user:{LONG_ID}") == long and named_key("+1 555 010 0100") == "+15550100100"
    for bad in ("", "a b", "a/b", "ü", "x" * 65, "a\n"):
        assert named_key(f"user:{bad}") is None
        with pytest.raises(ValueError):
            user_key(bad)


def test_a_talk_tokens_user_id_is_signed_and_checked() -> None:
    from parley.api.auth import Authenticator, AuthError

    async def no_key(secret: str) -> None:
        return None

    async def no_tenant(name: str) -> uuid.UUID:
        return uuid.uuid4()

    auth = Authenticator(Settings(_env_file=None), no_key, no_tenant)
    owner, agent_id = Principal(uuid.uuid4(), Role.editor, "k", "api_key"), uuid.uuid4()
    assert auth.check_talk_token(auth.issue_talk_token(owner, agent_id, user_id="ada"), agent_id).principal.user_id == (
        "ada"
    )
    assert auth.verify_talk_token(auth.issue_talk_token(owner, agent_id), agent_id).user_id is None
    with pytest.raises(ValueError, match="user_id"):
        auth.issue_talk_token(owner, agent_id, user_id="not an id")
    head, body, sig = auth.issue_talk_token(owner, agent_id, user_id="ada").split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "user_id": "eve"}).encode()).decode().rstrip("=")
    with pytest.raises(AuthError, match="invalid talk token"):
        auth.check_talk_token(f"{head}.{forged}.{sig}", agent_id)  # the browser cannot change it


@pytest.mark.asyncio(loop_scope="module")  # the store fixture's loop
async def test_the_next_session_of_the_user_starts_with_what_was_remembered(db: Database, tmp_path: Path) -> None:  # noqa: F811
    from parley.store.blobs.local import LocalBlobStore

    tenant, blobs = await new_tenant(db), LocalBlobStore(tmp_path / "rec")
    doc = agent()
    first = await call_from(db, blobs, tenant, doc, "127.0.0.1", user_id="ada.lovelace")  # an address: no number
    assert first and all("remember" not in p for p in first)
    second = await call_from(db, blobs, tenant, doc, "10.0.0.9", user_id="ada.lovelace")  # another device
    assert second and all("What you remember about this caller (1 earlier call" in p for p in second), second
    assert all("Ada booked a table" in p and "prefers: window seat" in p for p in second)
    # the user id wins over a number: that number's own memory is neither read nor written
    await call_from(db, blobs, tenant, doc, NUMBER, user_id="ada.lovelace")
    long_first = await call_from(db, blobs, tenant, doc, "127.0.0.1", user_id=LONG_ID)
    long_next = await call_from(db, blobs, tenant, doc, "127.0.0.1", user_id=LONG_ID)
    assert all("remember" not in p for p in long_first) and all("1 earlier call" in p for p in long_next)
    async with db.session() as s:
        repo = MemoryRepo(s)
        row = await repo.get(tenant, "user:ada.lovelace")
        assert row is not None and row.calls == 3 and await repo.get(tenant, NUMBER) is None
        assert await repo.get(await new_tenant(db), "user:ada.lovelace") is None  # another tenant's user
        long = await repo.get(tenant, user_key(LONG_ID))
        assert long is not None and long.calls == 2

    async def erase() -> None:
        async with db.session() as s:
            assert await MemoryRepo(s).erase(tenant, "user:ada.lovelace")

    await call_from(db, blobs, tenant, doc, "127.0.0.1", before_audio=erase, user_id="ada.lovelace")
    async with db.session() as s:
        assert await MemoryRepo(s).get(tenant, "user:ada.lovelace") is None  # the erasure won over the session
    await blobs.aclose()


# --- the talk WebSocket on a real `parley serve` -------------------------------------------------------------------
def served_agent() -> dict[str, Any]:
    doc = agent()
    returning = {"match": r"What you remembered before this call: \{", "reply": json.dumps(RETURNING)}
    doc["llm"]["options"]["rules"].insert(0, returning)  # the memory prompt of a user remembered before
    return doc


@pytest.fixture(scope="module")
def agent_doc() -> dict[str, Any]:
    return served_agent()  # the shared fixtures (tests/support/served.py) run `parley serve` and create it


def ws(service: Service, path: str) -> str:
    return service.url.replace("http", "ws") + path


async def session(url: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """One talk session: the caller's audio at twice real time, then the call's events until it ends."""
    pcm, events = caller_audio(), []
    async with websockets.connect(url, additional_headers=headers or {}) as sock:
        for k in range(0, len(pcm), 640):
            await sock.send(pcm[k : k + 640])
            await asyncio.sleep(0.01)
        await sock.send(json.dumps({"type": "end"}))
        async for message in sock:
            if isinstance(message, str):
                events.append(json.loads(message))
                if events[-1]["type"] == "end":
                    break
    return events


async def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        async with websockets.connect(url, additional_headers=headers or {}) as sock:
            await asyncio.wait_for(sock.recv(), 30)
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("the session was not refused")


def memory_of(c: httpx.Client, user: str, calls: int) -> dict[str, Any]:
    """The user's memory once ``calls`` sessions have written it (the update runs after the session ends)."""
    deadline = time.monotonic() + 20
    while True:
        got = c.get(f"/v1/callers/user%3A{user}/memory")
        if got.status_code == 200 and got.json()["calls"] >= calls:
            return dict(got.json())
        assert time.monotonic() < deadline, got.text
        time.sleep(0.1)


def test_a_token_remembers_the_user_and_header_auth_may_name_one(
    service: Service, key: str, agent: dict[str, Any]
) -> None:
    path = f"/v1/agents/{agent['id']}"
    with service.client(key) as c:
        token = c.post(f"{path}/talk-token", json={"user_id": "app-user.42"}).json()
        assert c.post(f"{path}/talk-token").status_code == 200  # no body: as before
        for bad in ("", "a b", "x" * 65, 42):
            assert c.post(f"{path}/talk-token", json={"user_id": bad}).status_code == 422
    first = asyncio.run(session(ws(service, token["url"])))
    assert first[0]["type"] == "call" and first[-1]["type"] == "end"
    with service.client(key) as c:
        got = memory_of(c, "app-user.42", 1)
        assert got["caller"] == "user:app-user.42" and got["facts"]["name"] == "Ada"
        assert c.get("/v1/callers/user:app-user.42/memory").json() == got  # unencoded works too
        token = c.post(f"{path}/talk-token", json={"user_id": "app-user.42"}).json()
    # a token's signed user id cannot be overridden by the query (nor is the token spent by trying)
    code, reason = asyncio.run(refusal(ws(service, token["url"] + "&user_id=someone-else")))
    assert code == 1008 and "user_id" in reason and "someone-else" not in reason
    # a trusted server (header auth) names the user itself: the same user, so their memory is read and rewritten
    auth = {"Authorization": f"Bearer {key}"}
    asyncio.run(session(ws(service, f"{path}/talk?user_id=app-user.42"), auth))
    with service.client(key) as c:
        got = memory_of(c, "app-user.42", 2)
        assert got["summary"] == RETURNING["summary"]  # the update found the memory the token's session left
    code, reason = asyncio.run(refusal(ws(service, f"{path}/talk?user_id=not%20valid"), auth))
    assert code == 1008 and "not valid" not in reason
    asyncio.run(session(ws(service, token["url"])))  # the token still opens its one session
    with service.client(key) as c:
        assert memory_of(c, "app-user.42", 3)["calls"] == 3
        assert c.get("/v1/callers/user%3Asomeone-else/memory").status_code == 404
        assert c.get("/v1/callers/user%3Anot%20valid/memory").status_code == 422


def test_tenants_with_the_same_user_id_are_separate_and_erasure_works(
    service: Service, key: str, agent: dict[str, Any]
) -> None:
    other = service.create_key(f"others-{uuid.uuid4().hex[:6]}")
    with service.client(other) as c:
        theirs = c.post("/v1/agents", json=served_agent()).json()
        token = c.post(f"/v1/agents/{theirs['id']}/talk-token", json={"user_id": "shared-id"}).json()
    with service.client(key) as c:
        mine = c.post(f"/v1/agents/{agent['id']}/talk-token", json={"user_id": "shared-id"}).json()
    asyncio.run(session(ws(service, mine["url"])))
    asyncio.run(session(ws(service, token["url"])))
    with service.client(key) as c:
        assert memory_of(c, "shared-id", 1)["calls"] == 1
    with service.client(other) as c:
        assert memory_of(c, "shared-id", 1)["calls"] == 1  # its own, not the first tenant's (which would be 2)
        assert c.delete("/v1/callers/user%3Ashared-id/memory").status_code == 204
        assert c.get("/v1/callers/user%3Ashared-id/memory").status_code == 404
    with service.client(key) as c:
        assert c.get("/v1/callers/user%3Ashared-id/memory").status_code == 200  # the other tenant's erasure only
        assert c.delete("/v1/callers/user:shared-id/memory").status_code == 204
        assert c.get("/v1/callers/user:shared-id/memory").status_code == 404
