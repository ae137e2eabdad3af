"""Grounded answers of the embedded LLM: does the receptionist say what its prompt says? Prints JSON.

Questions a caller would ask (hours, closed days, address, parking, prices, booking, and things the prompt does
not say, which must be handed to a colleague) go through the real ``llama`` provider as a call sends them:
the agent's system prompt with its knowledge collection's facts (one short page, so a call puts it in the
prompt), its greeting, earlier turns where a question follows one, the question, and the
agent's own LLM options (temperature as configured; ``--models`` only swaps the model). Each reply is scored
by checks on its text: every ``must`` pattern found, no ``must_not`` pattern found.

    .venv/bin/python bench/answers.py [--models fast accurate smollm2-135m] [--runs 2] [--out bench/answers-latest.json]

Per model (each in a child process, so RSS is its own): accuracy, the failures with their reply, time to first
token cold (the whole prompt evaluated) and with the system prompt cached (as ``warm()`` leaves it, median over
the questions), generation tokens/s, and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parley.agent.document import AgentDocument

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "examples" / "agents" / "receptionist.yaml"
KNOWLEDGE = {"bright-smile": [ROOT / "examples" / "agents" / "knowledge" / "bright-smile.md"]}
COLLEAGUE = r"colleague|call (you )?back|get back to you|check (on )?(that|this)|find out|not sure|don't (know|have)"


@dataclass(frozen=True)
class Question:
    topic: str
    text: str
    must: tuple[str, ...]  # regexes (case-insensitive), all must match
    must_not: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = field(default=())  # earlier (caller, agent) turns of the call


QUESTIONS = [
    Question("hours", "Hi, what time do you open on Monday?", (r"\b8\b|eight",)),
    Question("hours", "How late are you open on Fridays?", (r"\b6\b|six|18",), (r"\b1 ?pm|\bone\b",)),
    Question("hours", "Are you open on Saturday?", (r"\byes\b|\b9\b|nine|open",), (r"closed on saturday",)),
    Question("hours", "Until when are you open on Saturday?", (r"\b1\b|\bone\b|13",), (r"\b6 ?pm|\bsix\b",)),
    Question("closed", "Can I come in on Sunday?", (r"closed|not open|aren't open|don't open|\bno\b",)),
    Question("closed", "Hello, are you guys open on Sundays?", (r"closed|not open|aren't open|\bno\b",)),
    Question(
        "hours",
        "And on Saturday?",
        (r"\b9\b|nine", r"\b1\b|\bone\b|13"),
        history=(("When are you open during the week?", "We're open Monday to Friday, 8 am to 6 pm."),),
    ),
    Question("address", "What's your address?", (r"42|forty[- ]two", r"harbou?r")),
    Question("address", "Where are you located exactly?", (r"harbou?r|library",)),
    Question("address", "Is your office near anything I'd know?", (r"library",)),
    Question("parking", "Is there somewhere to park?", (r"behind|free|parking",), (r"no parking|street parking",)),
    Question("parking", "Do I have to pay for parking?", (r"free|\bno\b|don't|do not",), (r"\d+ ?dollars|\$\d",)),
    Question("price", "How much is a check-up?", (r"\b80\b|eighty",), (r"\b60\b|sixty",)),
    Question("price", "What does a cleaning cost?", (r"\b60\b|sixty",), (r"\b80\b|eighty",)),
    Question("price", "How much would I pay for a check-up and a cleaning?", (r"\b(80|140)\b|eighty|hundred",)),
    Question("services", "Do you do teeth whitening?", (r"\byes\b|we do|we offer|whitening",), (r"\bnot?\b",)),
    Question("services", "My tooth hurts really bad, can you help me?", (r"emergenc|appointment|come in|see you",)),
    Question("booking", "I'd like to book an appointment, please.", (r"name|which day|what day|when|preferred",)),
    Question("booking", "Can I get a check-up next Tuesday?", (r"name|tuesday|book",)),
    Question("unknown", "Do you take Delta Dental insurance?", (COLLEAGUE,), (r"^yes|we (do )?(accept|take)",)),
    Question("unknown", "How much is a filling?", (COLLEAGUE,), (r"\$\s?\d|\d+ dollars",)),
    Question("unknown", "What's the name of the dentist?", (COLLEAGUE,), (r"\bdr\.? [a-z]+",)),
    Question("unknown", "Do you do braces for kids?", (COLLEAGUE,), (r"^yes|we (do )?offer braces",)),
    Question("unknown", "Are you open on Christmas Day?", (COLLEAGUE + r"|closed",), (r"^yes|we are open",)),
]


def score(q: Question, reply: str) -> list[str]:
    """The checks a reply failed (empty: right)."""
    text = " ".join(reply.lower().split())
    failed = [f"missing /{p}/" for p in q.must if not re.search(p, text)]
    return failed + [f"said /{p}/" for p in q.must_not if re.search(p, text)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _ask(llm: Any, messages: list[Any]) -> tuple[str, float | None]:
    start, first, pieces = time.perf_counter(), None, []
    async for piece in llm.stream(messages):
        if isinstance(piece, str):
            first = first if first is not None else time.perf_counter() - start
            pieces.append(piece)
    return "".join(pieces).strip(), first


async def _as_called(agent: AgentDocument) -> AgentDocument:
    """The agent as a call runs it: its knowledge collection (one short page) read from the example file and put
    in the system prompt, as ``parley call --knowledge`` and the service do for a collection this small."""
    from parley.calls.knowledge import inline_document
    from parley.knowledge.local import local_knowledge

    if agent.knowledge is None:
        return agent
    with tempfile.TemporaryDirectory() as cache:
        async with local_knowledge(agent, KNOWLEDGE, Path(cache)) as known:
            if known is None or not known.inline:
                raise SystemExit(f"answers.py: the agent's collections are not inlined: {known and known.events}")
            return inline_document(agent, known)


async def run_model(model: str, runs: int, grounding: str) -> dict[str, Any]:
    """In the child: every question ``runs`` times on one context, as one call after another would."""
    from parley.agent.context import Conversation
    from parley.agent.document import load_agent
    from parley.agent.grounding import grounded
    from parley.services.llm.base import registry
    from parley.services.llm.llama import LlamaLLM

    agent = await _as_called(load_agent(AGENT))
    options = {**agent.llm.options, "model": model}
    llama = registry.create("llama", options)
    assert isinstance(llama, LlamaLLM)
    settings = agent.grounding.model_copy(
        update={"enabled": grounding != "off", "hints": grounding in ("agent", "hints")} if grounding != "agent" else {}
    )
    llm = grounded(llama, settings, agent.llm.provider)
    await llm.prepare()
    base = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
    _, cold = await _ask(llm, base.messages_for("Hello?"))  # the whole prompt evaluated: what a cold call pays
    results, cached, rates = [], [], []
    for run in range(runs):
        for q in QUESTIONS:
            conversation = Conversation(agent.system_prompt, agent.max_history_turns, agent.greeting)
            for user, heard in q.history:
                conversation.add_turn(user, heard)
            await llama.warm(conversation.system_messages(), wait=True)  # what the call did while greeting
            reply, first = await _ask(llm, conversation.messages_for(q.text))
            stats = llama.last_stats
            if first is not None and not q.history:
                cached.append(first)
            if stats is not None and stats.generated_tokens > 2:
                rates.append(stats.tokens_per_s)
            results.append(
                {"run": run, "topic": q.topic, "question": q.text, "reply": reply, "failed": score(q, reply)}
            )
    await llm.aclose()
    wrong = [r for r in results if r["failed"]]
    return {
        "model": model,
        "grounding": grounding,
        "file": llama.model_path.name,
        "accuracy": round(1 - len(wrong) / len(results), 3),
        "right": len(results) - len(wrong),
        "asked": len(results),
        "ttft_cold_ms": round(cold * 1000) if cold is not None else None,
        "ttft_cached_p50_ms": round(statistics.median(cached) * 1000) if cached else None,
        "tokens_per_s_p50": round(statistics.median(rates), 1) if rates else None,
        "rss_peak_mb": round(_rss_mb()),
        "failures": [{k: r[k] for k in ("question", "reply", "failed")} for r in wrong],
        "replies": [{k: r[k] for k in ("question", "reply")} for r in results if r["run"] == 0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["fast", "accurate"])
    parser.add_argument("--runs", type=int, default=1, help="ask every question this many times (sampling varies)")
    parser.add_argument(
        "--grounding",
        nargs="+",
        default=["agent"],
        choices=["agent", "off", "guard", "hints"],
        help="as the agent document says (the guard; hints off by default); off; the claim guard alone; guard and "
        "hints (one run each)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(run_model(args.child, args.runs, args.grounding[0]))))
        return
    models = []
    for model, grounding in ((m, g) for m in args.models for g in args.grounding):
        cmd = [sys.executable, __file__, "--child", model, "--runs", str(args.runs), "--grounding", grounding]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            models.append({"model": model, "error": done.stderr.strip()[-2000:]})
            continue
        models.append(json.loads(done.stdout.strip().splitlines()[-1]))
        m = models[-1]
        right = f"{m['right']}/{m['asked']} right"
        print(f"{model} (grounding {grounding}): {right}, ttft cached {m['ttft_cached_p50_ms']} ms", file=sys.stderr)
    result = {
        "bench": "answers",
        "agent": str(AGENT.relative_to(ROOT)),
        "questions": len(QUESTIONS),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "models": models,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
