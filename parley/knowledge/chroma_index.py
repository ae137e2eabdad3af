"""The ``chroma`` vector index: chunk vectors in a Chroma server, so many workers share them without holding them.

One Chroma collection per tenant (``parley_t_<tenant hex>``, cosine space): a call can only ever name its own
tenant's collection, so no filter mistake can cross tenants. Within it, every record carries its Parley
``collection_id`` and ``document_id`` as metadata, and every query is filtered on the collections asked for.
Every server call runs under a deadline (the client itself has none) and any failure, a server down, a timeout,
an error answer, becomes :class:`KnowledgeUnavailable`, naming the server without its credentials; vectors and
the token are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import structlog

from parley.knowledge.types import EMBEDDING_DIM, IndexedChunk, KnowledgeUnavailable, VectorMatches

log = structlog.get_logger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 30.0
#: what a server that does not say its batch limit gets (Chroma's own default is several thousand)
FALLBACK_BATCH = 1000
COLLECTION_PREFIX = "parley_t_"


def collection_name(tenant_id: str) -> str:
    """The tenant's Chroma collection: its UUID's hex, or a digest for any other id (names allow [a-z0-9._-])."""
    try:
        return COLLECTION_PREFIX + uuid.UUID(tenant_id).hex
    except ValueError:
        return COLLECTION_PREFIX + "h" + hashlib.sha256(tenant_id.encode()).hexdigest()[:40]


def _server_label(url: str) -> str:
    """scheme://host:port, for messages: never the URL's userinfo, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _vectors(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Stacks float32 rows, refusing a wrong length or a NaN here rather than as a server error."""
    out = np.asarray(np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in vectors]), dtype=np.float32)
    if out.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"vectors must have {EMBEDDING_DIM} dimensions, not {out.shape[1]}")
    if not np.isfinite(out).all():
        raise ValueError("vectors must be finite")
    return out


class ChromaIndex:
    """Chunk vectors of every tenant in one Chroma server (``PARLEY_KNOWLEDGE_CHROMA_URL``)."""

    name = "chroma"

    def __init__(self, client: Any, label: str, max_batch: int) -> None:
        self._client = client
        self._label = label
        self._max_batch = max(1, max_batch)
        self._collections: dict[str, Any] = {}  # collection name -> handle, only for ones known to exist

    @classmethod
    async def connect(cls, url: str, token: str | None = None) -> ChromaIndex:
        """A client for the server at ``url`` (http or https) that has answered a heartbeat."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the Chroma URL must be http(s)://host[:port], not {_server_label(url)!r}")
        label = _server_label(url)
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as e:
            raise KnowledgeUnavailable("the Chroma backend needs the chroma extra: pip install 'parley[chroma]'") from e
        headers = {"Authorization": f"Bearer {token}"} if token else None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"{parts.scheme}://{parts.hostname}:{port}{parts.path.rstrip('/')}"
        settings = Settings(anonymized_telemetry=False)

        async def open_client() -> tuple[Any, int]:
            client = await chromadb.AsyncHttpClient(host=host, port=port, headers=headers, settings=settings)
            _own_connections(client, headers)
            await client.heartbeat()
            return client, await client.get_max_batch_size()

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                client, max_batch = await open_client()
        except Exception as e:
            await _drop_shared_connections()
            raise KnowledgeUnavailable(f"Chroma at {label} did not answer: {_reason(e)}") from e
        log.info("knowledge.chroma_connected", server=label, max_batch=max_batch, token=bool(token))
        return cls(client, label, max_batch if max_batch > 0 else FALLBACK_BATCH)

    async def _call(self, what: str, op: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                return await op
        except Exception as e:
            self._collections.clear()  # a handle may be stale (the server's data wiped): looked up again next time
            log.warning("knowledge.chroma_failed", server=self._label, op=what, error=_reason(e))
            raise KnowledgeUnavailable(f"Chroma at {self._label} failed to {what}: {_reason(e)}") from e

    async def _collection(self, tenant_id: str) -> Any | None:
        """The tenant's collection; None when it has none yet (nothing stored, so nothing to find or delete)."""
        name = collection_name(tenant_id)
        found = self._collections.get(name)
        if found is None:
            found = await self._call("open a collection", self._lookup(name))
            if found is not None:
                self._collections[name] = found
        return found

    async def _created(self, tenant_id: str) -> Any:
        name = collection_name(tenant_id)
        found = self._collections.get(name)
        if found is None:
            found = await self._call("open a collection", self._client.get_or_create_collection(
                name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None))  # fmt: skip
            self._collections[name] = found
        return found

    async def _lookup(self, name: str) -> Any | None:
        from chromadb.errors import NotFoundError

        try:
            return await self._client.get_collection(name, embedding_function=None)
        except NotFoundError:
            return None

    async def upsert(self, tenant_id: str, collection_id: str, items: Sequence[IndexedChunk]) -> None:
        if not items:
            return
        vectors = _vectors([i.vector for i in items])
        col = await self._created(tenant_id)
        for start in range(0, len(items), self._max_batch):
            batch = items[start : start + self._max_batch]
            await self._call("store vectors", col.upsert(
                ids=[i.chunk_id for i in batch], embeddings=vectors[start : start + len(batch)],
                metadatas=[{"collection_id": collection_id, "document_id": i.document_id} for i in batch],
            ))  # fmt: skip

    async def delete_document(self, tenant_id: str, collection_id: str, document_id: str) -> None:
        where = {"$and": [{"collection_id": collection_id}, {"document_id": document_id}]}
        await self._delete(tenant_id, where=where)

    async def delete_chunks(self, tenant_id: str, chunk_ids: Sequence[str]) -> None:
        for start in range(0, len(chunk_ids), self._max_batch):
            await self._delete(tenant_id, ids=list(chunk_ids[start : start + self._max_batch]))

    async def delete_collection(self, tenant_id: str, collection_id: str) -> None:
        await self._delete(tenant_id, where={"collection_id": collection_id})

    async def _delete(self, tenant_id: str, **which: Any) -> None:
        col = await self._collection(tenant_id)
        if col is not None:
            await self._call("delete vectors", col.delete(**which))

    async def query(self, tenant_id: str, collection_ids: Sequence[str], vector: np.ndarray, k: int) -> VectorMatches:
        if k <= 0 or not collection_ids:
            return VectorMatches()
        query = _vectors([vector])
        col = await self._collection(tenant_id)
        if col is None:
            return VectorMatches()
        found = await self._call("search", col.query(
            query_embeddings=query, n_results=k, where={"collection_id": {"$in": list(collection_ids)}},
            include=["distances"],
        ))  # fmt: skip
        ids, distances = (found.get("ids") or [[]])[0], (found.get("distances") or [[]])[0]
        return VectorMatches(ids=list(ids), scores=[1.0 - float(d) for d in distances])

    async def close(self) -> None:
        """Closes the client's HTTP connections (the client has no public close of its own for async use)."""
        server = getattr(self._client, "_server", None)
        self._collections.clear()
        if server is not None and hasattr(server, "__aexit__"):
            try:
                await server.__aexit__(None, None, None)
            except Exception as e:  # closing must not fail the service's shutdown
                log.warning("knowledge.chroma_close_failed", server=self._label, error=_reason(e))


# chromadb-client 1.5.9's AsyncFastAPI keeps its httpx clients in a class-wide dict, one per event loop, so every
# client in a process would send the first one's headers (its token) and closing one would close them all. Each
# index takes the connection pool its creation made into a dict of its own (its close then closes only that).


def _shared_pools() -> dict[int, Any] | None:
    try:
        from chromadb.api.async_fastapi import AsyncFastAPI
    except ImportError:
        return None
    pools = vars(AsyncFastAPI).get("_clients")
    return pools if isinstance(pools, dict) else None


def _own_connections(client: Any, headers: dict[str, str] | None) -> None:
    server, pools = getattr(client, "_server", None), _shared_pools()
    if server is None or pools is None or "_clients" in vars(server):
        return
    key = hash(asyncio.get_running_loop())  # the client's own key: its event loop's hash
    pool = pools.pop(key, None)
    own: dict[int, Any] = {}
    if pool is not None:
        if pool.headers.get("authorization") == (headers or {}).get("Authorization"):
            own[key] = pool
        else:  # another client's, made while this one connected: left where it was
            pools[key] = pool
    server._clients = own


async def _drop_shared_connections() -> None:
    """A failed connect's pool, so that a later client on a loop with the same hash never takes it."""
    pools = _shared_pools()
    pool = pools.pop(hash(asyncio.get_running_loop()), None) if pools is not None else None
    if pool is not None:
        try:
            await pool.aclose()
        except Exception:  # a pool already broken: nothing to release
            pass


def _reason(e: BaseException) -> str:
    """A short cause for a message: the error's type and first line, cut so a server's echo cannot flood logs."""
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__
