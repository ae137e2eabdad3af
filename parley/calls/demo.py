"""``make run``'s demo call: a synthetic caller phones the example receptionist."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from rich.console import Console

from parley.agent.document import load_agent
from parley.calls.report import print_report
from parley.calls.simulate import simulate_call
from parley.calls.synthetic_caller import caller_recording

QUESTIONS = (
    "What are your opening hours on Saturday?",
    "Where is your office?",
    "How much does a cleaning cost?",
)
EXAMPLE_AGENT = Path(__file__).resolve().parents[2] / "examples" / "agents" / "receptionist.yaml"


def run_demo(out_dir: Path, fast: bool, console: Console) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    caller = out_dir / "caller.wav"
    agent = load_agent(EXAMPLE_AGENT)
    console.print("[bold]Parley demo[/bold]: a synthetic caller phones the example receptionist (local models).")
    voice = "gb-male" if shutil.which("espeak-ng") else "joe-quick"  # a voice unlike the agent's
    asyncio.run(caller_recording(QUESTIONS, caller, voice=voice))
    report = asyncio.run(simulate_call(agent, caller, out_dir / "call.wav", fast=fast))
    report.write(out_dir / "report.json")
    print_report(report, console)
    console.print(f"\nListen to the call: {out_dir / 'call.wav'} (caller left, agent right)")
    console.print(f"Per-turn report:    {out_dir / 'report.json'}")
    agent_path = EXAMPLE_AGENT.relative_to(Path.cwd()) if EXAMPLE_AGENT.is_relative_to(Path.cwd()) else EXAMPLE_AGENT
    console.print(
        f"Try your own:       parley call {agent_path} --input question.wav --output call.wav --report r.json"
    )
