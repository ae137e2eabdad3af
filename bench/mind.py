"""Voice-to-voice with a flow and a tool call against without, through the whole offline pipeline.

Runs audio scenarios with ``parley test``'s runner (synthetic voice in, Silero, Whisper, the embedded LLM, Piper,
the fast clock): the clinic's booking turn (flow routing + an HTTP tool against the example booking server, with
its signed request) beside the receptionist's question (no flow, no tool). Prints JSON: v2v p50/p95 per scenario,
routing time per turn (from the route events) and the tool's duration.

    .venv/bin/python bench/mind.py --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "clinic"))
sys.path.insert(0, str(ROOT))
import booking_server  # noqa: E402

from bench.support import cpu_model  # noqa: E402
from parley.testing import run_file  # noqa: E402

SECRET = "bench-secret"


def _serve_booking() -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(booking_server.app(SECRET), host="127.0.0.1", port=8089, log_config=None))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def _summary(result: Any, scenario: str) -> dict[str, Any]:
    found = next(s for s in result.scenarios if s.name == scenario)
    turns = [t for run in found.runs if run.result for t in run.result.turns]
    routes = [e["ms"] for t in turns for e in t.events if e["type"] == "route"]
    tools = [e["duration_ms"] for t in turns for e in t.events if e["type"] == "tool"]
    return {
        "passed": f"{sum(r.passed for r in found.runs)}/{len(found.runs)}",
        "voice_to_voice_ms": found.latency,
        "routing_ms_median": round(statistics.median(routes), 1) if routes else None,
        "tool_ms_median": round(statistics.median(tools), 1) if tools else None,
    }


async def main(repeat: int) -> dict[str, Any]:
    os.environ.update(
        CLINIC_TOOL_SECRET=SECRET, PARLEY_PROVIDER_ENV_ALLOW="CLINIC_TOOL_SECRET", PARLEY_OUTBOUND_ALLOW="127.0.0.1"
    )
    server = _serve_booking()
    try:
        clinic = await run_file(ROOT / "examples/agents/clinic.tests.yaml", repeat=repeat, only="by voice")
        receptionist = await run_file(ROOT / "examples/agents/receptionist.tests.yaml", repeat=repeat, only="by voice")
    finally:
        server.should_exit = True
    return {
        "cpu": cpu_model(),
        "repeat": repeat,
        "with_flow_and_tool": _summary(clinic, "booking by voice"),
        "without": _summary(receptionist, "by voice"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    print(json.dumps(asyncio.run(main(parser.parse_args().repeat)), indent=2))
