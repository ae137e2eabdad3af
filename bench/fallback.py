"""A primary LLM that dies mid-reply at random points, over many turns: the gap the caller hears at the switch.

The primary and the fallback are the real ``openai`` provider (official SDK) against the local server that speaks
OpenAI's streaming format (tests/support/fakes/openai_chat.py): the primary is told to drop its connection after
a random number of tokens (0: before the first), the fallback answers. Each turn starts with fresh breakers, so
every turn pays a switch (with breakers kept, later turns skip the dead primary and pay nothing).

Reported (JSON): the switch gap (from the last token before the failure — or the request, when none came — to
the first token of the fallback; what the caller hears as a pause, since TTS speaks tokens as they come), turns
without a reply, and Parley's own overhead per provider hop (a healthy chain against the bare provider).
Targets: 0 turns without a reply, p95 gap ≤ 500 ms, overhead ≤ 5 ms p95.

    .venv/bin/python bench/fallback.py --turns 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parley.services.fallback import breaker  # noqa: E402
from parley.services.fallback.build import chain_provider  # noqa: E402
from parley.services.fallback.config import FallbackLink  # noqa: E402
from parley.services.llm.base import LLM, Message  # noqa: E402
from parley.services.llm.base import registry as llm_registry  # noqa: E402
from parley.services.secrets import NoSecrets  # noqa: E402
from tests.support.fakes.openai_chat import serve_chat  # noqa: E402

MESSAGES: list[Message] = [{"role": "user", "content": "When do you open tomorrow?"}]


def _link(url: str, model: str) -> FallbackLink:
    options = {"base_url": url, "model": model, "api_key": "sk-bench", "max_retries": 0, "preconnect": False}
    return FallbackLink(provider="openai", options=options)


async def _times(llm: LLM) -> tuple[list[float], str]:
    """Arrival time of each text piece (from the request) and the whole text."""
    start, marks, text = time.perf_counter(), [], ""
    async for piece in llm.stream(MESSAGES):
        if isinstance(piece, str):
            marks.append(time.perf_counter() - start)
            text += piece
    return marks, text


async def switch_gaps(url: str, turns: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    gaps, lost = [], 0
    for _ in range(turns):
        breaker.reset_breakers()
        dies_after = rng.randint(0, 10)
        llm = await chain_provider("llm", llm_registry, [_link(url, f"die-after-{dies_after}"), _link(url, "ok")],
                                   NoSecrets())  # fmt: skip
        try:
            marks, text = await _times(llm)
        except Exception:
            lost += 1
            continue
        finally:
            await llm.aclose()
        if not text.strip():
            lost += 1
            continue
        before = marks[dies_after - 1] if dies_after else 0.0
        gaps.append((marks[dies_after] - before) * 1000)
    gaps.sort()
    return {
        "turns": turns,
        "turns_without_reply": lost,
        "gap_ms": {
            "p50": round(statistics.median(gaps), 1),
            "p95": round(gaps[int(0.95 * (len(gaps) - 1))], 1),
            "max": round(gaps[-1], 1),
        },
    }


async def tts_switch_gaps(turns: int, seed: int) -> dict[str, Any]:
    """A voice failing mid-sentence at a random 100 ms chunk, resumed by the next from the unspoken words: the
    time between its last chunk and the next voice's first (Parley's own part of the gap; a cloud voice adds
    its time to first byte)."""
    from parley.services.tts.base import registry as tts_registry
    from tests.support.fakes import flaky_speech  # noqa: F401  (registers flaky-tts)

    rng = random.Random(seed)
    sentence = "Your appointment is on Monday at ten in the morning with doctor Rao, see you then."
    gaps = []
    for _ in range(turns):
        breaker.reset_breakers()
        links = [FallbackLink(provider="flaky-tts", options={"name": "a", "fail_after_chunks": rng.randint(1, 40)}),
                 FallbackLink(provider="flaky-tts", options={"name": "b", "rate": 24000})]  # fmt: skip
        tts = await chain_provider("tts", tts_registry, links, NoSecrets())
        marks, last = [], time.perf_counter()
        async for _chunk in tts.synthesize(sentence):
            now = time.perf_counter()
            marks.append(now - last)
            last = now
        await tts.aclose()
        gaps.append(max(marks[1:] or [0.0]) * 1000)
    gaps.sort()
    return {"p50": round(statistics.median(gaps), 2), "p95": round(gaps[int(0.95 * (len(gaps) - 1))], 2),
            "max": round(gaps[-1], 2)}  # fmt: skip


async def hop_overhead(url: str, repeats: int) -> dict[str, Any]:
    """Time to the first and last token through a healthy chain minus through the bare provider, paired runs."""
    bare = llm_registry.create("openai", _link(url, "ok").options)
    chained = await chain_provider("llm", llm_registry, [_link(url, "ok"), _link(url, "ok")], NoSecrets())
    diffs = []
    try:
        for _ in range(repeats):
            a, _ = await _times(bare)
            b, _ = await _times(chained)
            diffs.append((b[0] - a[0]) * 1000)
    finally:
        await bare.aclose()
        await chained.aclose()
    diffs.sort()
    return {"first_token_added_ms": {"p50": round(statistics.median(diffs), 2),
                                     "p95": round(diffs[int(0.95 * (len(diffs) - 1))], 2)}}  # fmt: skip


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["PARLEY_OUTBOUND_ALLOW"] = "127.0.0.1"  # the fake cloud is local
    for fake in serve_chat():  # the server runs while this body does
        result = {"cpu": _cpu(), "cores": os.cpu_count(), **await switch_gaps(fake.url, args.turns, args.seed)}
        result["overhead"] = await hop_overhead(fake.url, args.repeats)
        result["tts_switch_gap_ms"] = await tts_switch_gaps(args.turns, args.seed)
        return result
    raise RuntimeError("the fake server did not start")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=40, help="paired runs for the per-hop overhead")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = json.dumps(asyncio.run(main(args)), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
