"""The ``chroma`` vector index against a real Chroma server (tests/chroma_server.py installs and starts it)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from parley.knowledge.chroma_index import ChromaIndex, collection_name
from parley.knowledge.types import EMBEDDING_DIM, IndexedChunk, KnowledgeUnavailable

from .chroma_server import ChromaServer, chroma_url, wait_closed
from .support.servers import _free_port

__all__ = ["chroma_url"]


def unit(*weights: tuple[int, float]) -> np.ndarray:
    """An L2-normalised vector with the given (axis, weight) components."""
    v = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    for axis, w in weights:
        v[axis] = w
    return v / np.linalg.norm(v)


def at_angle(degrees: float) -> np.ndarray:
    """A unit vector in the plane of axes 0 and 1, ``degrees`` from axis 0: its cosine with axis 0 is known."""
    r = math.radians(degrees)
    return unit((0, math.cos(r)), (1, math.sin(r)))


def chunk(cid: str, doc: str, vector: np.ndarray) -> IndexedChunk:
    return IndexedChunk(chunk_id=cid, document_id=doc, vector=vector)


def tenant() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def index(chroma_url: str) -> AsyncIterator[ChromaIndex]:
    idx = await ChromaIndex.connect(chroma_url)
    try:
        yield idx
    finally:
        await idx.close()


async def test_query_orders_by_cosine_with_scores(index: ChromaIndex) -> None:
    t, col = tenant(), "c1"
    await index.upsert(t, col, [chunk("far", "d1", at_angle(80)), chunk("near", "d1", at_angle(10)),
                                chunk("mid", "d2", at_angle(45)), chunk("opposite", "d2", at_angle(180))])  # fmt: skip
    found = await index.query(t, [col], at_angle(0), 3)
    assert found.ids == ["near", "mid", "far"]
    expected = [math.cos(math.radians(a)) for a in (10, 45, 80)]
    assert found.scores == pytest.approx(expected, abs=1e-4)
    everything = await index.query(t, [col], at_angle(0), 10)  # more than there are: all of them
    assert everything.ids == ["near", "mid", "far", "opposite"]
    assert everything.scores[-1] == pytest.approx(-1.0, abs=1e-4)


async def test_tenants_never_see_each_other(index: ChromaIndex) -> None:
    a, b, col = tenant(), tenant(), "shared-collection-id"
    await index.upsert(a, col, [chunk("a-secret", "d", at_angle(0))])
    assert (await index.query(b, [col], at_angle(0), 5)).ids == []  # b has no Chroma collection at all
    await index.upsert(b, col, [chunk("b-own", "d", at_angle(30))])
    assert (await index.query(b, [col], at_angle(0), 5)).ids == ["b-own"]
    assert (await index.query(a, [col], at_angle(0), 5)).ids == ["a-secret"]
    await index.delete_collection(b, col)  # b's delete leaves a's vectors alone
    await index.delete_document(b, col, "d")
    assert (await index.query(a, [col], at_angle(0), 5)).ids == ["a-secret"]
    assert collection_name(a) != collection_name(b)


async def test_query_filters_on_the_collections_asked_for(index: ChromaIndex) -> None:
    t = tenant()
    for n, col in enumerate(("c1", "c2", "c3")):
        await index.upsert(t, col, [chunk(f"{col}-x", "d", at_angle(n * 10)), chunk(f"{col}-y", "d", at_angle(60))])
    found = await index.query(t, ["c2", "c3"], at_angle(0), 10)
    assert set(found.ids) == {"c2-x", "c2-y", "c3-x", "c3-y"}
    assert found.ids[:2] == ["c2-x", "c3-x"]
    assert (await index.query(t, ["c1"], at_angle(0), 1)).ids == ["c1-x"]
    assert (await index.query(t, ["nope"], at_angle(0), 5)).ids == []
    assert (await index.query(t, [], at_angle(0), 5)).ids == []


async def test_deletes(index: ChromaIndex) -> None:
    t = tenant()
    await index.upsert(t, "c1", [chunk("1a", "d1", at_angle(0)), chunk("1b", "d2", at_angle(5))])
    await index.upsert(t, "c2", [chunk("2a", "d1", at_angle(10)), chunk("2b", "d3", at_angle(15))])
    await index.delete_document(t, "c1", "d1")  # only c1's d1, not c2's document of the same id
    assert (await index.query(t, ["c1", "c2"], at_angle(0), 10)).ids == ["1b", "2a", "2b"]
    await index.delete_chunks(t, ["2b", "no-such-chunk"])
    assert (await index.query(t, ["c1", "c2"], at_angle(0), 10)).ids == ["1b", "2a"]
    await index.delete_collection(t, "c2")
    assert (await index.query(t, ["c1", "c2"], at_angle(0), 10)).ids == ["1b"]
    other = tenant()  # deleting from a tenant that never stored anything is a no-op
    await index.delete_document(other, "c1", "d1")
    await index.delete_collection(other, "c1")
    await index.delete_chunks(other, ["1b"])


async def test_reupsert_replaces(index: ChromaIndex) -> None:
    t = tenant()
    await index.upsert(t, "c1", [chunk("x", "d1", at_angle(0)), chunk("y", "d1", at_angle(50))])
    await index.upsert(t, "c2", [chunk("x", "d2", at_angle(40)), chunk("y", "d1", at_angle(5))])  # moved too
    found = await index.query(t, ["c1", "c2"], at_angle(0), 10)
    assert found.ids == ["y", "x"]
    assert found.scores == pytest.approx([math.cos(math.radians(5)), math.cos(math.radians(40))], abs=1e-4)
    assert (await index.query(t, ["c1"], at_angle(0), 10)).ids == []
    await index.delete_document(t, "c2", "d2")  # the document id came with the new version
    assert (await index.query(t, ["c2"], at_angle(0), 10)).ids == ["y"]


async def test_thousand_vectors_in_batches(chroma_url: str) -> None:
    idx = await ChromaIndex.connect(chroma_url)
    idx._max_batch = 128  # several batches of a real server call, with a short last one
    try:
        t, rng = tenant(), np.random.default_rng(7)
        vectors = rng.normal(size=(1000, EMBEDDING_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await idx.upsert(t, "big", [chunk(f"c{i}", f"d{i % 10}", v) for i, v in enumerate(vectors)])
        for probe in (0, 517, 999):
            found = await idx.query(t, ["big"], vectors[probe], 5)
            expected = np.argsort(-(vectors @ vectors[probe]))[:5]
            assert found.ids[0] == f"c{probe}"
            assert found.scores[0] == pytest.approx(1.0, abs=1e-4)
            assert found.ids == [f"c{i}" for i in expected]
        await idx.delete_document(t, "big", "d3")
        assert len((await idx.query(t, ["big"], vectors[3], 1000)).ids) == 900
    finally:
        await idx.close()


async def test_server_batch_limit_is_read(index: ChromaIndex) -> None:
    assert index._max_batch > 1000  # the server says (5461 for 1.5.9); upserts split by it


async def test_bad_vectors_are_refused(index: ChromaIndex) -> None:
    with pytest.raises(ValueError, match="384"):
        await index.upsert(tenant(), "c", [chunk("x", "d", np.ones(3, dtype=np.float32))])
    with pytest.raises(ValueError, match="finite"):
        await index.query(tenant(), ["c"], np.full(EMBEDDING_DIM, np.nan, dtype=np.float32), 3)


async def test_server_going_away_is_unavailable(tmp_path: Path) -> None:
    server = ChromaServer(tmp_path)
    idx = await ChromaIndex.connect(server.url)
    try:
        t = tenant()
        await idx.upsert(t, "c", [chunk("x", "d", at_angle(0))])
        server.stop()
        wait_closed(server.port)
        with pytest.raises(KnowledgeUnavailable, match=r"Chroma at http://127\.0\.0\.1:\d+ failed to search"):
            await idx.query(t, ["c"], at_angle(0), 3)
        with pytest.raises(KnowledgeUnavailable):
            await idx.upsert(tenant(), "c", [chunk("y", "d", at_angle(0))])
    finally:
        await idx.close()
        server.stop()
    with pytest.raises(KnowledgeUnavailable, match="did not answer"):
        await ChromaIndex.connect(server.url)


async def test_connect_to_something_else_is_unavailable(tmp_path: Path) -> None:
    import asyncio

    async def not_chroma(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_chroma, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(KnowledgeUnavailable, match="did not answer"):
            await ChromaIndex.connect(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(KnowledgeUnavailable, match="did not answer"):
        await ChromaIndex.connect(f"http://127.0.0.1:{_free_port()}")  # nothing listening
    with pytest.raises(ValueError, match="http"):
        await ChromaIndex.connect("ftp://127.0.0.1:21")


async def test_token_is_sent_and_not_in_messages(chroma_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The token travels as a header; the 1.5.9 Rust server does not check tokens (see the skipped test)."""
    token = "chroma-test-token-" + uuid.uuid4().hex
    idx = await ChromaIndex.connect(chroma_url, token)
    try:
        headers = idx._client._server.get_request_headers()
        assert headers.get("authorization") == f"Bearer {token}"
        t = tenant()
        await idx.upsert(t, "c", [chunk("x", "d", at_angle(0))])
        assert (await idx.query(t, ["c"], at_angle(0), 1)).ids == ["x"]
    finally:
        await idx.close()
    assert token not in caplog.text


@pytest.mark.skip(
    reason="chromadb 1.5.9's Rust server has no token authentication (CHROMA_SERVER_AUTHN_* are "
    "ignored: an unauthenticated request is answered); put an authenticating proxy in front of it"
)
async def test_server_refuses_a_wrong_token() -> None:
    raise AssertionError("unreachable")


async def test_collection_removed_behind_its_back_recovers(index: ChromaIndex) -> None:
    """A handle to a collection the server lost fails once, then is looked up again (the service keeps going)."""
    t = tenant()
    await index.upsert(t, "c", [chunk("x", "d", at_angle(0))])
    await index._client.delete_collection(collection_name(t))  # an operator wiping the server's data
    with pytest.raises(KnowledgeUnavailable):
        await index.query(t, ["c"], at_angle(0), 3)
    assert (await index.query(t, ["c"], at_angle(0), 3)).ids == []
    await index.upsert(t, "c", [chunk("y", "d", at_angle(0))])
    assert (await index.query(t, ["c"], at_angle(0), 3)).ids == ["y"]


async def test_two_indexes_keep_their_own_tokens(chroma_url: str) -> None:
    """chromadb-client shares one connection pool per event loop between clients; each index takes its own."""
    a = await ChromaIndex.connect(chroma_url, "token-a")
    b = await ChromaIndex.connect(chroma_url, "token-b")
    plain = await ChromaIndex.connect(chroma_url)
    try:
        assert a._client._server.get_request_headers()["authorization"] == "Bearer token-a"
        assert b._client._server.get_request_headers()["authorization"] == "Bearer token-b"
        assert "authorization" not in plain._client._server.get_request_headers()
        await a.close()  # closes a's connections only
        t = tenant()
        await b.upsert(t, "c", [chunk("x", "d", at_angle(0))])
        assert (await plain.query(t, ["c"], at_angle(0), 1)).ids == ["x"]
    finally:
        await b.close()
        await plain.close()


async def test_a_hung_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that stops answering (SIGSTOP) fails the call at its deadline instead of hanging the turn."""
    import os
    import signal

    import parley.knowledge.chroma_index as chroma_index

    server = ChromaServer(tmp_path)
    idx = await ChromaIndex.connect(server.url)
    try:
        t = tenant()
        await idx.upsert(t, "c", [chunk("x", "d", at_angle(0))])
        monkeypatch.setattr(chroma_index, "CALL_TIMEOUT_S", 1.0)
        monkeypatch.setattr(chroma_index, "CONNECT_TIMEOUT_S", 1.0)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(KnowledgeUnavailable, match="failed to search: timed out"):
                await idx.query(t, ["c"], at_angle(0), 3)
            with pytest.raises(KnowledgeUnavailable, match="did not answer: timed out"):
                await ChromaIndex.connect(server.url)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert (await idx.query(t, ["c"], at_angle(0), 3)).ids == ["x"]  # and recovers once it answers again
    finally:
        await idx.close()
        server.stop()
