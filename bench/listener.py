"""The listener's own CPU per call: N callers' audio through the real turn taker, VAD and Smart Turn, no server.

bench/load.py measures the whole media path, and on a shared machine its gaps say more
about the neighbours than about Parley. This measures only what the listener costs
(process CPU time, the model threads included) per second of caller audio, so the VAD
and turn options can be compared on a busy machine too. Each caller sends 20 ms frames
of 8 kHz telephone audio over line noise: an utterance (synthesized speech), then
``--listen`` s of the caller listening, in a loop; the streams are fed in ``--groups``
loop steps per 20 ms tick (frames of different calls reach the server spread over the
tick: the load benchmark's server saw a mean Silero batch of ~6 at 50 calls).

    .venv/bin/python bench/listener.py [--calls 100] [--seconds 30] [--out file.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callers import noisy, voices  # noqa: E402

from parley.agent.document import InterruptionSettings, TurnSettings, VADSettings  # noqa: E402
from parley.pipeline.frames import AgentSpoke, AudioIn, Direction, EndOfTurn, Frame, StartFrame  # noqa: E402
from parley.pipeline.processor import Processor  # noqa: E402
from parley.processors.turns import TurnTaker  # noqa: E402
from parley.services.turn import smart_turn  # noqa: E402
from parley.services.turn.judge import EndOfTurnJudge  # noqa: E402
from parley.services.vad import batch  # noqa: E402
from parley.services.vad.base import registry  # noqa: E402

CONFIGS = {
    "energy": ("energy", {}, "silence"),
    "silero-plain": ("silero", {"gate": False, "batch": False}, "silence"),
    "silero-batch": ("silero", {"gate": False}, "silence"),
    "silero": ("silero", {}, "silence"),
    "silero-plain+smart_turn": ("silero", {"gate": False, "batch": False}, "smart_turn"),
    "silero+smart_turn": ("silero", {}, "smart_turn"),
}


class Ends(Processor):
    """Counts turns; answers each at once, so the next utterance is a new turn, not a barge-in."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, EndOfTurn):
            self.turns += 1
            await self.push(AgentSpoke(turn_id=frame.turn_id), Direction.UPSTREAM)


def script(utterances: list[np.ndarray], n: int, listen: float, seconds: float, dbfs: float) -> np.ndarray:
    """Caller ``n``'s audio: utterances in turn (starting at a different one per caller), each then silence."""
    parts, total, k = [], 0, n
    while total < seconds * 8000:
        u = utterances[k % len(utterances)]
        parts += [u, np.zeros(int(listen * 8000), np.int16)]
        total += u.size + int(listen * 8000)
        k += 1
    audio = np.concatenate(parts)[: int(seconds * 8000)]
    return noisy(audio, dbfs, 1000 + n)


async def run(config: str, utterances: list[np.ndarray], calls: int, seconds: float, listen: float, groups: int,
              dbfs: float) -> dict[str, Any]:  # fmt: skip
    provider, options, detector = CONFIGS[config]
    settings = TurnSettings(detector=detector)
    takers, sinks = [], []
    for _ in range(calls):
        judge = EndOfTurnJudge(settings)
        taker = TurnTaker(
            registry.create(provider, options), VADSettings(), settings, InterruptionSettings(), judge=judge
        )
        sink = Ends()
        taker.link(sink)
        await taker.queue_frame(StartFrame(sample_rate=8000))
        await taker.queue_frame(AgentSpoke(turn_id=0), Direction.UPSTREAM)
        takers.append(taker)
        sinks.append(sink)
    audio = [script(utterances, n, listen, seconds, dbfs).tobytes() for n in range(calls)]
    model = smart_turn.shared() if detector == "smart_turn" else None
    st0 = dict(model.stats.__dict__) if model else {}
    vad0 = dict(batch.COUNTS)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for k in range(int(seconds * 50)):
        for g in range(groups):
            await asyncio.gather(
                *(
                    takers[i].queue_frame(AudioIn(pcm=audio[i][k * 320 : (k + 1) * 320], sample_rate=8000, t=k * 0.02))
                    for i in range(g, calls, groups)
                )
            )
    for t in takers:  # pending Smart Turn verdicts count too
        await asyncio.gather(*list(t._spawned), return_exceptions=True)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    call_seconds, call_minutes = calls * seconds, calls * seconds / 60
    vad = {k: batch.COUNTS[k] - vad0[k] for k in vad0}
    out: dict[str, Any] = {
        "config": config, "calls": calls, "seconds": seconds, "listen_s": listen, "groups": groups,
        "cpu_ms_per_call_second": round(1000 * cpu / call_seconds, 3),
        "calls_per_core_listener_only": round(call_seconds / cpu, 1), "wall_s": round(wall, 1),
        "turns_per_call_minute": round(sum(s.turns for s in sinks) / call_minutes, 2),
    }  # fmt: skip
    if provider == "silero" and (vad["runs"] + vad["skips"]):
        out["vad_windows_run_pct"] = round(100 * vad["runs"] / (vad["runs"] + vad["skips"]), 1)
        out["vad_mean_batch"] = round(vad["batched"] / vad["batches"], 1) if vad["batches"] else None
    if model is not None:
        st = {k: v - st0[k] for k, v in model.stats.__dict__.items()}
        out["smart_turn_requests_per_call_minute"] = round(st["requests"] / call_minutes, 2)
        out["smart_turn_inferences_per_call_minute"] = round(st["inferences"] / call_minutes, 2)
        out["smart_turn_ms_per_inference"] = round(1000 * st["cpu_s"] / max(1, st["inferences"]), 1)
        out["smart_turn_cpu_ms_per_call_second"] = round(1000 * st["cpu_s"] / call_seconds, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0, help="caller audio per call")
    ap.add_argument("--listen", type=float, default=4.5, help="seconds the caller listens after each utterance")
    ap.add_argument("--groups", type=int, default=10, help="loop steps the calls' frames are spread over per tick")
    ap.add_argument("--noise-dbfs", type=float, default=-50.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results, utterances = [], voices()
    for config in args.configs:
        r = asyncio.run(run(config, utterances, args.calls, args.seconds, args.listen, args.groups, args.noise_dbfs))
        print(json.dumps(r), file=sys.stderr, flush=True)
        results.append(r)
    text = json.dumps({"benchmark": "listener", "noise_dbfs": args.noise_dbfs, "results": results}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
