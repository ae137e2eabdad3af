"""``make run``'s demo call: a synthetic caller phones the example receptionist."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console

from parley.agent.document import load_agent
from parley.audio import resample, write_wav
from parley.calls.report import print_report
from parley.calls.simulate import simulate_call
from parley.services.tts.base import TTS
from parley.services.tts.fallback import create_tts

QUESTIONS = (
    "Hi, what are your opening hours on Saturday?",
    "Where is your office?",
    "How much does a cleaning cost?",
)
EXAMPLE_AGENT = Path(__file__).resolve().parents[2] / "examples" / "agents" / "receptionist.yaml"


async def synthesize_caller(questions: tuple[str, ...], path: Path, gap_secs: float = 2.5) -> None:
    """Speak ``questions`` with a voice other than the agent's, separated by silence, into a 16 kHz WAV."""
    tts: TTS
    if shutil.which("espeak-ng"):
        tts = create_tts("espeak", {"voice": "en-us+f3", "rate_wpm": 165}, None)
    else:
        tts = create_tts("piper", {"length_scale": 0.9}, None)
    parts: list[np.ndarray] = []
    gap = np.zeros(int(16000 * gap_secs), dtype=np.int16)
    for q in questions:
        pcm = b"".join([chunk async for chunk in tts.synthesize(q)])
        parts += [resample(np.frombuffer(pcm, dtype="<i2"), tts.sample_rate, 16000), gap]
    await tts.aclose()
    write_wav(path, np.concatenate(parts), 16000)


def run_demo(out_dir: Path, fast: bool, console: Console) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    caller = out_dir / "caller.wav"
    agent = load_agent(EXAMPLE_AGENT)
    console.print("[bold]Parley demo[/bold]: a synthetic caller phones the example receptionist (local models).")
    asyncio.run(synthesize_caller(QUESTIONS, caller))
    report = asyncio.run(simulate_call(agent, caller, out_dir / "call.wav", fast=fast))
    report.write(out_dir / "report.json")
    print_report(report, console)
    console.print(f"\nListen to the call: {out_dir / 'call.wav'} (caller left, agent right)")
    console.print(f"Per-turn report:    {out_dir / 'report.json'}")
    console.print(f"Try your own:       parley call {EXAMPLE_AGENT.relative_to(Path.cwd()) if EXAMPLE_AGENT.is_relative_to(Path.cwd()) else EXAMPLE_AGENT} --input question.wav --output call.wav --report r.json")
