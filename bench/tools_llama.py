"""Does the embedded LLM call the agent's tools when it should, and only then? Prints JSON.

The receptionist, with ``hang_up`` and a ``transfer`` to the front desk allowed, hears utterances that should
end the call, ask for a person, or neither, through the real ``llama`` provider with tools offered the way a
call offers them (``Responder`` passes ``ActionSettings.tools()``; ``options.tools: true`` forces them on for
models whose catalogue entry keeps them off). Right: the expected tool was called (or none, for the others);
a call where none was expected is a false call, the figure that matters most (a caller hung up on).

    .venv/bin/python bench/tools_llama.py [--models fast accurate] [--runs 2] [--out bench/tools-latest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "examples" / "agents" / "receptionist.yaml"
# what an agent that enables actions says about them in its prompt (the receptionist enables none)
HINT = "When the caller says goodbye, call hang_up. When the caller asks for a person, call transfer."
CASES: list[tuple[str, str | None]] = [
    ("That's all I needed, thank you. Goodbye!", "hang_up"),
    ("Okay, thanks a lot, bye.", "hang_up"),
    ("No, nothing else. Have a nice day, bye bye.", "hang_up"),
    ("Can I speak to a real person, please?", "transfer"),
    ("Please put me through to the front desk.", "transfer"),
    ("I don't want to talk to a machine, get me a human.", "transfer"),
    ("What are your opening hours?", None),
    ("How much does a cleaning cost?", None),
    ("I'd like to book a check-up for Monday.", None),
    ("Thanks! And is there parking?", None),
    ("Where are you located?", None),
    ("My name is John Smith, Tuesday works for me.", None),
]


async def run_model(model: str, runs: int, hint: bool) -> dict[str, Any]:
    from parley.agent.context import Conversation
    from parley.agent.document import ActionSettings, load_agent
    from parley.services.llm.base import ToolCall, registry
    from parley.services.llm.llama import LlamaLLM

    agent = load_agent(AGENT)
    tools = ActionSettings(hang_up=True, transfer_to="sip:front-desk@example.com").tools()
    llm = registry.create("llama", {**agent.llm.options, "model": model, "tools": True})
    assert isinstance(llm, LlamaLLM)
    await llm.prepare()
    rows: list[dict[str, Any]] = []
    firsts: list[float] = []
    for run in range(runs):
        for text, expected in CASES:
            prompt = f"{agent.system_prompt.strip()}\n{HINT}" if hint else agent.system_prompt
            conversation = Conversation(prompt, agent.max_history_turns, agent.greeting)
            await llm.warm(conversation.system_messages(), tools, wait=True)
            start, first = time.perf_counter(), None
            words: list[str] = []
            calls: list[dict[str, Any]] = []
            async for piece in llm.stream(conversation.messages_for(text), tools):
                if isinstance(piece, ToolCall):
                    calls.append({"name": piece.name, "arguments": piece.arguments})
                else:
                    first = first if first is not None else time.perf_counter() - start
                    words.append(piece)
            names = [c["name"] for c in calls]
            right = names == [expected] if expected else not names
            if first is not None and expected is None:
                firsts.append(first)
            rows.append({"run": run, "utterance": text, "expected": expected, "calls": calls,
                         "reply": "".join(words).strip(), "right": right})  # fmt: skip
    await llm.aclose()
    should = [r for r in rows if r["expected"]]
    should_not = [r for r in rows if not r["expected"]]
    return {
        "model": model,
        "prompt_hint": hint,
        "right": sum(r["right"] for r in rows),
        "asked": len(rows),
        "calls_right": f"{sum(r['right'] for r in should)}/{len(should)}",
        "false_calls": sum(bool(r["calls"]) for r in should_not),
        "ttft_text_p50_ms": round(statistics.median(firsts) * 1000) if firsts else None,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["fast", "accurate"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-hint", action="store_true", help="the receptionist's prompt as it is, without HINT")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models = [asyncio.run(run_model(m, args.runs, not args.no_hint)) for m in args.models]
    result = {"bench": "tools_llama", "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "models": models}  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
