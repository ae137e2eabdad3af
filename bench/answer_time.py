"""Time to answer: from a call being answered to the first greeting audio leaving Parley. Prints JSON.

Each call does what a live one does when it is answered (``Services.create``: take or load models, prefill the
system prompt) and then runs the real pipeline at real time on a silent caller until the greeting has played.
Calls arrive ``--gap`` seconds apart, ``--concurrent`` at a time, after a start-up warm-up like ``parley serve``'s
(a context loaded with another prompt). ``--no-pool`` keeps no warm contexts (every call builds its own, as
before the pool) for comparison; ``--hog`` runs a CPU busy loop in another process meanwhile.

    .venv/bin/python bench/answer_time.py [--calls 8] [--concurrent 1] [--no-pool] [--hog] [--out file.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.document import AgentDocument, load_agent
from parley.calls.session import Services
from parley.calls.simulate import simulate_call
from parley.logs import configure_logging
from parley.services.llm import llama_pool

ROOT = Path(__file__).resolve().parents[1]
TARGET_MS = 500
HOG = "while True: pass"


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 1) if values else float("nan")


async def one_call(agent: AgentDocument, silence: Path, out: Path) -> dict[str, Any]:
    """Answer, greet, hang up; times from the answer (the pipeline clock starts when ``simulate_call`` runs)."""
    answered = time.perf_counter()
    services = await Services.create(agent)
    ready = time.perf_counter()
    try:
        report = await simulate_call(agent, silence, out, services=services, fast=False)
    finally:
        await services.aclose()
    times = report.greeting.times if report.greeting else {}
    sample: dict[str, Any] = {"services_ready_ms": round((ready - answered) * 1000, 1)}
    if "first_audio_out" in times:
        sample["greeting_ms"] = round((ready - answered + times["first_audio_out"]) * 1000, 1)
        sample["pipeline_to_greeting_ms"] = round(times["first_audio_out"] * 1000, 1)
    return sample


async def run(args: argparse.Namespace) -> dict[str, Any]:
    agent = load_agent(args.agent)
    if not agent.greeting:
        agent = agent.model_copy(update={"greeting": "Hello, thanks for calling. How can I help?"})
    if args.no_pool:
        llama_pool.reset(
            llama_pool.Resources(
                llama_pool.Slots(llama_pool.default_concurrency()), llama_pool.ContextPool(size=0), "token"
            )
        )
    work = Path(tempfile.mkdtemp(prefix="parley-answer-"))
    silence = work / "silence.wav"
    _write_silence(silence, 1.0)
    warm = await Services.create(AgentDocument(name="warm-up", system_prompt="-"))  # as `parley serve` starts
    await warm.aclose()
    hog = await asyncio.create_subprocess_exec(sys.executable, "-c", HOG) if args.hog else None
    samples: list[dict[str, Any]] = []
    try:
        for i in range(0, args.calls, args.concurrent):
            batch = [one_call(agent, silence, work / f"call-{i}-{j}.wav") for j in range(args.concurrent)]
            samples += await asyncio.gather(*batch)
            print(f"calls {i}..: {samples[-args.concurrent :]}", file=sys.stderr)
            await asyncio.sleep(args.gap)
    finally:
        if hog is not None:
            hog.kill()
            await hog.wait()
    return summarize(args, samples)


def _write_silence(path: Path, secs: float) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(int(16000 * secs) * 2))


def summarize(args: argparse.Namespace, samples: list[dict[str, Any]]) -> dict[str, Any]:
    greet = [s["greeting_ms"] for s in samples if "greeting_ms" in s]
    ready = [s["services_ready_ms"] for s in samples]
    return {
        "benchmark": "answer_to_first_greeting_audio",
        "pool": not args.no_pool,
        "concurrent": args.concurrent,
        "hog": args.hog,
        "cpus": llama_pool.available_cpus(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "calls": len(samples),
        "greeted": len(greet),
        "answer_to_greeting": {"p50_ms": pct(greet, 50), "p95_ms": pct(greet, 95), "max_ms": max(greet, default=None)},
        "services_ready": {"p50_ms": pct(ready, 50), "p95_ms": pct(ready, 95)},
        "target_ms": TARGET_MS,
        "meets_target": bool(greet) and pct(greet, 50) <= TARGET_MS,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=1, help="calls answered at the same moment")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between one call (batch) and the next")
    parser.add_argument("--no-pool", action="store_true", help="keep no warm contexts: each call builds its own")
    parser.add_argument("--hog", action="store_true", help="run a CPU busy loop in another process meanwhile")
    parser.add_argument("--agent", type=Path, default=ROOT / "examples" / "agents" / "receptionist.yaml")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging(False)
    text = json.dumps(asyncio.run(run(args)), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
