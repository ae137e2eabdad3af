"""Voice-to-voice latency of the embedded stack, measured at real time. Prints JSON.

A corpus of spoken questions (several voices; 16 kHz WAV and 8 kHz µ-law, the
telephone case) is played into the real pipeline at real time, one call per
question. Latency is measured from the true end of speech in the input (found in
the audio itself), not from the VAD's decision, to the first agent audio out.

    .venv/bin/python bench/latency.py [--voices ...] [--questions N] [--out results.json]
    .venv/bin/python bench/latency.py --concurrent 2 [--hog]   # N calls at once [beside a busy-loop process]

With ``--concurrent N`` each of N workers has its own services (as N live calls do) and runs the corpus; the
calls of different workers overlap. ``--hog`` runs a CPU busy loop in another process for the whole run.

The receptionist's facts live in a knowledge collection (examples/agents/knowledge/bright-smile.md). By default it
runs with them inline in its prompt instead (:data:`INLINE_PROMPT`, its prompt before the collection) and no
knowledge; ``--knowledge`` runs it as written, retrieving from the file through the local knowledge base:

    .venv/bin/python bench/latency.py --knowledge   # compare with a run without it
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from support import cpu_model

from parley.agent.document import load_agent
from parley.audio import pcm16_to_ulaw, resample
from parley.calls.knowledge import CallKnowledge
from parley.calls.session import Services
from parley.calls.simulate import simulate_call
from parley.calls.synthetic_caller import VOICES, caller_recording
from parley.knowledge.local import local_knowledge
from parley.logs import configure_logging

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What are your opening hours on Saturday?",
    "Where is your office?",
    "How much does a cleaning cost?",
    "Is there parking near the building?",
    "Can I book a check-up for next Monday?",
    "Do you offer teeth whitening?",
]
TARGET = {"p50_ms": 550, "p95_ms": 800}
KNOWLEDGE = {"bright-smile": [ROOT / "examples" / "agents" / "knowledge" / "bright-smile.md"]}
#: the receptionist's prompt with its facts inline, as it was before they moved to its knowledge collection
INLINE_PROMPT = """You are the receptionist of Bright Smile Dental, speaking to a caller on the phone.
Answer in one or two short sentences. Be friendly and direct. Never use lists or markdown.
Facts you know:
- Opening hours: Monday to Friday, 8 am to 6 pm; Saturday 9 am to 1 pm; closed on Sunday.
- Address: 42 Harbor Street, Springfield, next to the central library.
- Services: check-ups, cleaning, fillings, whitening and emergency care.
- A check-up costs 80 dollars; cleaning costs 60 dollars.
- To book an appointment, take the caller's name and preferred day.
- Parking is free behind the building.
If you do not know something, say you will ask a colleague to call back.
"""


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def write_ulaw(samples16k: np.ndarray, path: Path) -> None:
    """A raw 8 kHz µ-law telephone recording (.ulaw)."""
    path.write_bytes(pcm16_to_ulaw(resample(samples16k, 16000, 8000).astype("<i2").tobytes()))


HOG = "while True: pass"


async def calls(args: argparse.Namespace, work: Path) -> list[tuple[str, str, Path, float, str]]:
    """The corpus as (voice, input kind, file, true end of speech, question), written once."""
    out = []
    for voice in args.voices:
        for i, question in enumerate(QUESTIONS[: args.questions]):
            script = await caller_recording([question], work / f"{voice}-{i}.wav", voice=voice, gap_secs=0.2)
            out.append((voice, "wav16k", script.path, script.spans[0][1], question))
            if not args.no_ulaw:
                ulaw = work / f"{voice}-{i}.ulaw"
                write_ulaw(script.samples, ulaw)
                out.append((voice, "ulaw8k", ulaw, script.spans[0][1], question))
    return out


async def worker(
    n: int, agent: Any, corpus: list[tuple[str, str, Path, float, str]], work: Path, start: asyncio.Barrier,
    knowledge: CallKnowledge | None,
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """One call at a time through its own services; workers start their calls together."""
    t0 = time.perf_counter()
    services = await Services.create(agent)
    load_s = time.perf_counter() - t0
    samples: list[dict[str, Any]] = []
    try:
        await start.wait()
        for j, (voice, kind, path, true_end, question) in enumerate(corpus):
            out = work / f"w{n}-{j}-call.wav"
            report = await simulate_call(agent, path, out, services=services, fast=False, knowledge=knowledge)
            samples.append(measure(report.as_dict(), true_end, voice, kind, question))
            s = samples[-1]
            print(
                f"w{n} {voice:14s} {kind:7s} v2v={s.get('voice_to_voice_ms')} ms  heard={s['stt_text']!r}",
                file=sys.stderr,
            )
    finally:
        await services.aclose()
    return samples, load_s


def bench_agent(args: argparse.Namespace) -> Any:
    """The agent as run: greeting off; without ``--knowledge``, the receptionist's facts inline instead."""
    agent = load_agent(args.agent).model_copy(update={"greeting": ""})
    if not args.knowledge and agent.knowledge is not None:
        inline = INLINE_PROMPT if args.agent.name == "receptionist.yaml" else agent.system_prompt
        agent = agent.model_copy(update={"knowledge": None, "system_prompt": inline})
    if args.model:
        agent.llm.options["model"] = args.model
    if args.grounding != "agent":
        agent.grounding.enabled = args.grounding == "on"
    return agent


async def run(args: argparse.Namespace) -> dict[str, Any]:
    agent = bench_agent(args)
    work = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    corpus = await calls(args, work)
    start = asyncio.Barrier(args.concurrent)
    async with local_knowledge(agent, KNOWLEDGE if args.knowledge else {}, work / "knowledge") as known:
        hog = await asyncio.create_subprocess_exec(sys.executable, "-c", HOG) if args.hog else None
        try:
            runs = (worker(n, agent, corpus, work, start, known) for n in range(args.concurrent))
            results = await asyncio.gather(*runs)
        finally:
            if hog is not None:
                hog.kill()
                await hog.wait()
    samples = [s for r in results for s in r[0]]
    out = summarize(samples, max(r[1] for r in results))
    out["concurrent"], out["hog"], out["cpu_model"] = args.concurrent, args.hog, cpu_model()
    model = agent.llm.options.get("model", "fast") if agent.llm.provider == "llama" else agent.llm.provider
    grounded = agent.grounding.active(agent.llm.provider)
    out["stack"] = f"silero-vad + whisper tiny.en (faster-whisper int8) + {model} (llama.cpp) + {agent.tts.provider}"
    out["grounding"] = grounded
    out["knowledge"] = args.knowledge
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def measure(report: dict[str, Any], true_end_in_file: float, voice: str, kind: str, question: str) -> dict[str, Any]:
    turns = report["turns"]
    out: dict[str, Any] = {"voice": voice, "input": kind, "question": question, "turns": len(turns)}
    if not turns:
        out["stt_text"] = ""
        return out
    turn = turns[0]
    times = turn["times"]
    true_end = report["caller_audio_offset"] + true_end_in_file
    out["stt_text"] = turn["caller_text"]
    out["agent_text"] = turn["agent_text"]
    looked_up = [e for e in turn.get("events", []) if e.get("type") == "knowledge"]
    if looked_up:  # the retrieval's outcome and how long the reply waited for it
        out["knowledge"] = {"status": looked_up[-1].get("status"), "elapsed_ms": looked_up[-1].get("elapsed_ms")}
    if "first_audio_out" in times:
        out["voice_to_voice_ms"] = round((times["first_audio_out"] - true_end) * 1000, 1)
    out["after_true_end_ms"] = {k: round((v - true_end) * 1000, 1) for k, v in times.items()}
    stages = {
        "vad_lag": ("true_end", "speech_end"),
        "pause_detect": ("speech_end", "stt_start"),
        "stt": ("stt_start", "stt_final"),
        "llm_first_token": ("stt_final", "llm_first_token"),
        "tts_first_audio": ("llm_first_token", "tts_first_audio"),
        "to_first_audio_out": ("tts_first_audio", "first_audio_out"),
    }
    all_times = {**times, "true_end": true_end}
    out["stages_ms"] = {
        name: round((all_times[b] - all_times[a]) * 1000, 1)
        for name, (a, b) in stages.items()
        if a in all_times and b in all_times
    }
    return out


def summarize(samples: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    v2v = [s["voice_to_voice_ms"] for s in samples if "voice_to_voice_ms" in s]
    stage_names = {k for s in samples for k in s.get("stages_ms", {})}
    stages = {
        name: {
            "p50_ms": round(pct([s["stages_ms"][name] for s in samples if name in s.get("stages_ms", {})], 50), 1),
            "mean_ms": round(
                float(np.mean([s["stages_ms"][name] for s in samples if name in s.get("stages_ms", {})])), 1
            ),
        }
        for name in sorted(stage_names)
    }
    total = sum(v["mean_ms"] for v in stages.values()) or 1.0
    for v in stages.values():
        v["share"] = round(v["mean_ms"] / total, 3)
    by_input = {
        kind: {"p50_ms": round(pct(vals, 50), 1), "p95_ms": round(pct(vals, 95), 1), "n": len(vals)}
        for kind in sorted({s["input"] for s in samples})
        if (vals := [s["voice_to_voice_ms"] for s in samples if s["input"] == kind and "voice_to_voice_ms" in s])
    }
    return {
        "benchmark": "voice_to_voice_latency",
        "measured_from": "true end of speech in the input audio (-40 dBFS), to first agent audio out",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "model_load_s": round(load_s, 2),
        "calls": len(samples),
        "answered": len(v2v),
        "voice_to_voice": {
            "p50_ms": round(pct(v2v, 50), 1),
            "p95_ms": round(pct(v2v, 95), 1),
            "min_ms": round(min(v2v), 1) if v2v else None,
            "max_ms": round(max(v2v), 1) if v2v else None,
        },
        "by_input": by_input,
        "target": TARGET,
        "meets_target": bool(v2v) and pct(v2v, 50) <= TARGET["p50_ms"] and pct(v2v, 95) <= TARGET["p95_ms"],
        "stages": stages,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", nargs="+", default=list(VOICES), choices=list(VOICES))
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--no-ulaw", action="store_true", help="skip the 8 kHz µ-law copies")
    parser.add_argument("--concurrent", type=int, default=1, help="calls at once (each with its own services)")
    parser.add_argument("--hog", action="store_true", help="run a CPU busy loop in another process meanwhile")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--agent", type=Path, default=ROOT / "examples" / "agents" / "receptionist.yaml")
    parser.add_argument("--model", help="llm.options.model instead of the agent's (fast, accurate, smollm2-135m)")
    parser.add_argument("--grounding", choices=["agent", "on", "off"], default="agent", help="the claim guard")
    parser.add_argument(
        "--knowledge", action="store_true", help="retrieve the receptionist's facts from its collection (local)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging(False)  # logs go to stderr: stdout is the JSON
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
