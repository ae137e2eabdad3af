"""Hybrid ranking: the vector and keyword candidates of every searched collection, merged into one scored list.

e5's cosine similarities sit in a narrow band whose place depends on the question: "hello" scores 0.80 against
anything, "who is the heart doctor" 0.74 against unrelated text. So a chunk's vector score is its cosine minus the
question's *baseline* (the mean of its three best cosines against :data:`~parley.knowledge.embedding.NEUTRAL`
passages about nothing in particular), rescaled from the band between "unrelated" (+0.02) and "clearly about it"
(+0.08) to 0..1. Measured on English, Spanish and Hindi questions against English facts, in single-topic and
multi-topic chunks: answers sat at +0.046 to +0.14, unrelated text at or below +0.034. The keyword score is
BM25 over the question's IDF mass (parley.knowledge.keyword), 0..1. The fused
score is their probabilistic OR, 1 − (1 − vector)(1 − keyword): either signal alone can carry a chunk (a
paraphrase has no shared words; a product code has no meaning to embed), and both together count for more. The
threshold applies to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from parley.knowledge.cache import LoadedCollection
from parley.knowledge.types import Hit

MARGIN_FLOOR = 0.02  # over the baseline by this or less: unrelated (0 after rescaling)
MARGIN_CEIL = 0.08  # over the baseline by this or more: as close as answers get (1)
DEFAULT_MIN_SCORE = 0.3


def baseline(query: np.ndarray, neutral: np.ndarray) -> float:
    """The question's similarity to text about nothing in particular."""
    sims = np.sort(neutral @ query)
    return float(sims[-3:].mean())


def rescaled(cosine: float, base: float) -> float:
    return float(np.clip((cosine - base - MARGIN_FLOOR) / (MARGIN_CEIL - MARGIN_FLOOR), 0.0, 1.0))


@dataclass
class Candidate:
    collection: int
    position: int
    cosine: float | None = None
    keyword: float = 0.0


def vector_candidates(
    loaded: Sequence[LoadedCollection], query: np.ndarray, k: int
) -> dict[tuple[int, int], Candidate]:
    """The embedded backend's nearest chunks: exact cosine over each collection's matrix."""
    found: dict[tuple[int, int], Candidate] = {}
    for ci, coll in enumerate(loaded):
        if coll.vectors is None or not len(coll):
            continue
        sims = coll.vectors @ query
        n = min(k, sims.size)
        top = np.argpartition(-sims, n - 1)[:n]
        for pos in top:
            found[(ci, int(pos))] = Candidate(ci, int(pos), float(sims[pos]))
    return found


def add_keyword(
    found: dict[tuple[int, int], Candidate], loaded: Sequence[LoadedCollection], question: str,
    query: np.ndarray, k: int,
) -> None:  # fmt: skip
    """Adds each collection's BM25 candidates; with local vectors, a keyword-only candidate gets its cosine too."""
    for ci, coll in enumerate(loaded):
        positions, scores = coll.keywords.search(question, k)
        for pos, score in zip(positions.tolist(), scores.tolist(), strict=True):
            cand = found.setdefault((ci, pos), Candidate(ci, pos))
            cand.keyword = score
            if cand.cosine is None and coll.vectors is not None:
                cand.cosine = float(coll.vectors[pos] @ query)


def ranked(
    found: dict[tuple[int, int], Candidate], loaded: Sequence[LoadedCollection], top_k: int, min_score: float,
    base: float,
) -> list[Hit]:  # fmt: skip
    hits: list[Hit] = []
    for cand in found.values():
        vector = rescaled(cand.cosine, base) if cand.cosine is not None else 0.0
        score = 1.0 - (1.0 - vector) * (1.0 - cand.keyword)
        if score < min_score:
            continue
        coll = loaded[cand.collection]
        p = cand.position
        hits.append(Hit(
            chunk_id=coll.chunk_ids[p], document_id=coll.document_ids[p], document=coll.document_names[p],
            collection=coll.name, chunk=coll.indexes[p], text=coll.texts[p], score=score,
            vector_score=cand.cosine or 0.0, keyword_score=cand.keyword, locator=coll.locators[p],
            heading=coll.headings[p],
        ))  # fmt: skip
    hits.sort(key=lambda h: -h.score)
    return hits[:top_k]
