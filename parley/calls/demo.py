"""``make run``'s demo call: a synthetic caller phones the example receptionist.

The receptionist ships inside the package (``parley/calls/receptionist.yaml``, the same file as
``examples/agents/receptionist.yaml``, and its knowledge, ``knowledge/bright-smile.md``): an installed wheel has no
source tree to point into.
"""

from __future__ import annotations

import asyncio
import shutil
from importlib import resources
from pathlib import Path

from rich.console import Console

from parley.agent.document import AgentDocument, load_agent
from parley.calls.report import print_report
from parley.calls.simulate import CallReport, simulate_call
from parley.calls.synthetic_caller import caller_recording
from parley.knowledge.local import local_knowledge

QUESTIONS = (
    "What are your opening hours on Saturday?",
    "Where is your office?",
    "How much does a cleaning cost?",
)
EXAMPLE_AGENT = resources.files("parley.calls") / "receptionist.yaml"
EXAMPLE_KNOWLEDGE = resources.files("parley.calls") / "knowledge" / "bright-smile.md"


def run_demo(out_dir: Path, fast: bool, console: Console) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    caller = out_dir / "caller.wav"
    agent_path = out_dir / "receptionist.yaml"  # a copy beside the call: the one to edit and try
    agent_path.write_text(EXAMPLE_AGENT.read_text(encoding="utf-8"), encoding="utf-8")
    agent = load_agent(agent_path)
    facts = out_dir / "knowledge" / "bright-smile.md"  # the receptionist's knowledge collection, beside it
    facts.parent.mkdir(exist_ok=True)
    if EXAMPLE_KNOWLEDGE.is_file():
        facts.write_text(EXAMPLE_KNOWLEDGE.read_text(encoding="utf-8"), encoding="utf-8")
    else:  # a wheel built without it: the receptionist answers without its facts
        console.print("[yellow]the receptionist's knowledge file is not in this installation[/yellow]")
    console.print("[bold]Parley demo[/bold]: a synthetic caller phones the example receptionist (local models).")
    voice = "gb-male" if shutil.which("espeak-ng") else "joe-quick"  # a voice unlike the agent's
    asyncio.run(caller_recording(QUESTIONS, caller, voice=voice))
    report = asyncio.run(_call(agent, caller, out_dir / "call.wav", fast, facts if facts.is_file() else None))
    report.write(out_dir / "report.json")
    print_report(report, console)
    console.print(f"\nListen to the call: {out_dir / 'call.wav'} (caller left, agent right)")
    console.print(f"Per-turn report:    {out_dir / 'report.json'}")
    console.print(
        f"Try your own:       parley call {agent_path} --knowledge bright-smile={facts} --input question.wav "
        "--output call.wav --report r.json"
    )


async def _call(agent: AgentDocument, caller: Path, output: Path, fast: bool, facts: Path | None) -> CallReport:
    async with local_knowledge(agent, {"bright-smile": [facts]} if facts else {}) as knowledge:
        return await simulate_call(agent, caller, output, fast=fast, knowledge=knowledge)
