"""A knowledge store in memory for the call-side tests: chunks per collection, found by shared words.

A real :class:`~parley.knowledge.types.KnowledgeSearch` (no mock): it answers what keyword overlap finds, and can
be made slow or failing, so the tests see the call side (budget, events, citations) and not a retrieval model.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from parley.knowledge.types import Hit

HOURS = "The clinic is open Monday to Friday from 8 am to 6 pm, and on Saturday from 9 am to noon."
PARKING = "Parking is free in the garage under the building; enter from Elm Street."
SOUPS = "Soups of the day: tomato basil and lentil."
INVOICE = "Invoices are sent on the first of the month; pay by card or bank transfer within 14 days."
STOP = {"the", "a", "an", "is", "are", "what", "your", "you", "do", "i", "my", "on", "of", "to", "about", "please"}


class Shelf:
    """A knowledge store in memory: chunks per collection, found by shared words; slow or failing on request."""

    def __init__(
        self,
        chunks: dict[str, list[tuple[str, str]]],
        delay: float = 0.0,
        fail: Exception | None = None,
        whole: bool = False,
    ) -> None:
        self.chunks = chunks
        self.whole = whole  # False: a shelf too big to give whole (calls retrieve per turn)
        self.delay = delay
        self.fail = fail
        self.calls: list[tuple[str, list[str]]] = []
        self.cancelled = 0
        self.warmed: list[list[str]] = []

    async def search(
        self, query: str, collections: Sequence[str], *, top_k: int = 4, min_score: float | None = None
    ) -> list[Hit]:
        self.calls.append((query, list(collections)))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        words = set(re.findall(r"\w+", query.lower())) - STOP
        hits = []
        for collection in collections:
            for i, (document, text) in enumerate(self.chunks.get(collection, [])):
                score = len(words & set(re.findall(r"\w+", text.lower()))) / max(1, len(words))
                if score >= (0.2 if min_score is None else min_score):
                    chunk_id = f"{document}#{i}"
                    hits.append(Hit(chunk_id, f"doc-{document}", document, collection, i, text, score))
        return sorted(hits, key=lambda h: -h.score)[:top_k]

    async def warm(self, collections: Sequence[str]) -> None:
        self.warmed.append(list(collections))

    async def contents(self, collections: Sequence[str], max_chars: int) -> list[Hit] | None:
        chunks = [(c, i, d, t) for c in collections for i, (d, t) in enumerate(self.chunks.get(c, []))]
        if not self.whole or sum(len(t) for *_, t in chunks) > max_chars:
            return None
        return [Hit(f"{d}#{i}", f"doc-{d}", d, c, i, t, 1.0) for c, i, d, t in chunks]


def clinic() -> Shelf:
    return Shelf({"clinic": [("hours.pdf", HOURS), ("visiting.md", PARKING)], "menu": [("menu.md", SOUPS)],
                  "billing": [("billing.md", INVOICE)]})  # fmt: skip
