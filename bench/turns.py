"""End-of-turn detection on synthetic callers: false cut-offs, end-of-turn delay, voice-to-voice. Prints JSON.

The corpus (bench/turns_corpus.py): paused sentences (a mid-sentence pause of
0.5–1.3 s; a **false cut-off** is an end of turn declared inside it) and complete
short answers (the **end-of-turn delay** runs from the true end of speech, found in
the audio, to the ``EndOfTurn``), from eight voices, in a dev set and a held-out set
reported separately.

Each turn goes through the real :class:`TurnTaker` with Silero VAD, once per
detector: ``silence`` (the fixed ``end_of_turn_secs``), ``smart_turn`` (the model on
the audio alone) and ``smart_turn+text`` (what a call runs: Whisper tiny.en
transcribes each speculative attempt and its text reaches the judge ``--stt-ms``
after the pause: 100 ms by default, STT's p50 on two quiet cores, because a slow
transcript shields short pauses and a busy machine would flatter the figures).
Times are audio time, so these figures do not depend on the machine's load;
transcripts and model verdicts are cached per attempt (``--cache`` keeps them
between runs), so ``--thresholds`` sweeps ``complete_threshold`` cheaply.

``--v2v`` also runs complete answers through the whole embedded stack in real
time (receptionist agent, greeting off) and reports voice-to-voice and its stages
from the true end of speech: that one does depend on the machine.

    .venv/bin/python bench/turns.py [--voices joe us-female ...] [--thresholds 0.3 0.5 0.7] [--v2v]
        [--cache bench/.corpus/turns/attempts.json] [--out bench/turns-latest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from turns_corpus import DEFAULT_VOICES, PAUSES, RATE, SETS, corpus
from turns_v2v import voice_to_voice

from parley.agent.document import InterruptionSettings, TurnSettings, VADSettings
from parley.pipeline.frames import (
    AgentSpoke,
    AudioIn,
    Direction,
    EndOfTurn,
    Frame,
    StartFrame,
    Transcript,
    TurnResumed,
    UserTurn,
)
from parley.pipeline.processor import Processor
from parley.processors.turns import TurnTaker
from parley.services.stt.base import STT
from parley.services.turn import smart_turn
from parley.services.turn.judge import EndOfTurnJudge
from parley.services.vad.silero import SileroVAD

DETECTORS = ["silence", "smart_turn", "smart_turn+text"]
AGENT_TURN = {"pause_secs": 0.064, "end_of_turn_secs": 0.4}  # the defaults (the receptionist uses 0.35)


def _key(pcm: bytes) -> str:
    return hashlib.sha256(pcm).hexdigest()


class CachedSmartTurn(smart_turn.SmartTurn):
    """The real model, each distinct attempt inferred once (a threshold sweep hears the same audio again)."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[str, float] = {}

    async def predict(self, pcm: bytes, sample_rate: int) -> float:
        key = _key(pcm)
        if key not in self.cache:
            self.cache[key] = await super().predict(pcm, sample_rate)
        return self.cache[key]


class Listener(Processor):
    """Collects end-of-turn frames; with an STT, transcribes each speculative attempt (cached with its time)."""

    def __init__(self, stt: STT | None, stt_cache: dict[str, tuple[str, float]], stt_secs: float | None) -> None:
        super().__init__()
        self.stt, self.stt_cache, self.stt_secs = stt, stt_cache, stt_secs
        self.ends: list[float] = []
        self.texts: list[tuple[float, int, str]] = []  # (audio time to deliver it, turn id, text)
        self.heard: list[str] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, EndOfTurn):
            self.ends.append(frame.t)
        elif isinstance(frame, TurnResumed):  # the transcriber cancels the older attempt's STT
            self.texts = [x for x in self.texts if x[1] != frame.turn_id]
        elif isinstance(frame, UserTurn) and self.stt is not None:
            key = _key(frame.pcm)
            if key not in self.stt_cache:
                t0 = time.perf_counter()
                text = await self.stt.transcribe(frame.pcm)
                self.stt_cache[key] = (text, time.perf_counter() - t0)
            text, secs = self.stt_cache[key]
            secs = secs if self.stt_secs is None else self.stt_secs
            self.texts.append((frame.t + secs, frame.turn_id, text))
            self.heard.append(text)


async def run_one(
    item: dict[str, Any], settings: TurnSettings, model: smart_turn.SmartTurn | None, listener: Listener
) -> dict[str, Any]:
    """One turn through a fresh TurnTaker, fed 20 ms frames; the transcript arrives at its audio time."""
    judge = EndOfTurnJudge(settings, model=model, expect_transcripts=listener.stt is not None)
    taker = TurnTaker(SileroVAD(), VADSettings(), settings, InterruptionSettings(), judge=judge)
    taker.link(listener)
    await taker.queue_frame(StartFrame(sample_rate=RATE))
    await taker.queue_frame(AgentSpoke(turn_id=0), Direction.UPSTREAM)  # no greeting playing
    audio, step = item["audio"], RATE // 50
    for k in range(audio.size // step):
        t = k * 0.02
        while listener.texts and listener.texts[0][0] <= t:
            _, turn_id, text = listener.texts.pop(0)
            await taker.queue_frame(Transcript(turn_id=turn_id, text=text, t=t), Direction.UPSTREAM)
        pcm = audio[k * step : (k + 1) * step].astype("<i2").tobytes()
        await taker.queue_frame(AudioIn(pcm=pcm, sample_rate=RATE, t=t))
    out: dict[str, Any] = {
        "ends": [round(e, 3) for e in listener.ends],
        "p": [round(p, 3) for p in judge.probabilities],
    }
    if listener.heard:
        out["heard"] = listener.heard
    if item["pause"] is not None:
        start, resume = item["pause"]
        out["cut_off"] = any(start < e < resume for e in listener.ends)
    if listener.ends:
        out["delay_ms"] = round((listener.ends[-1] - item["speech_end"]) * 1000, 1)
    return out


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """False cut-offs by pause length; end-of-turn delay on complete turns; the turns that went wrong."""
    paused = [r for r in rows if r["kind"] == "paused"]
    complete = [r for r in rows if r["kind"] == "complete"]
    by_pause = {}
    for p in PAUSES:
        sel = [r for r in paused if r["pause_secs"] == p]
        by_pause[str(p)] = round(sum(r["cut_off"] for r in sel) / len(sel), 3) if sel else None
    upto1 = [r for r in paused if r["pause_secs"] <= 1.0]
    delays = [r["delay_ms"] for r in complete if "delay_ms" in r]
    misses = [f"{r['voice']}: {r['text']} (pause {r['pause_secs']} s)" for r in paused if r["cut_off"]]
    slow = [f"{r['voice']}: {r['text']} ({r.get('delay_ms')} ms)" for r in complete if r.get("delay_ms", 1e9) > 1000]
    return {
        "false_cutoff_rate_pauses_upto_1s": round(sum(r["cut_off"] for r in upto1) / max(1, len(upto1)), 3),
        "false_cutoff_rate_by_pause": by_pause,
        "complete_eot_delay_ms": {"p50": pct(delays, 50), "p95": pct(delays, 95), "max": pct(delays, 100)},
        "complete_over_1s": len(slow),
        "complete_missed": sum("delay_ms" not in r for r in complete),
        "n_paused": len(paused),
        "n_complete": len(complete),
        "cut_offs": misses,
        "slow_complete": slow,
    }


def inference_ms(n: int = 20) -> dict[str, float | None]:
    """Smart Turn's features + inference on one thread, as the judge runs it (8 s window)."""
    model = smart_turn.shared()
    x = (np.random.default_rng(0).normal(0, 0.1, 4 * RATE)).astype(np.float32)
    model.probability(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.probability(x)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": pct(times, 50), "p95": pct(times, 95)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def detectors(args: argparse.Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Every detector (and threshold) over the corpus, summarised per set."""
    stt: STT | None = None
    model = CachedSmartTurn()
    stt_cache: dict[str, tuple[str, float]] = {}
    if args.cache and args.cache.exists():  # an earlier run's verdicts and transcripts (with its STT times)
        saved = json.loads(args.cache.read_text())
        model.cache, stt_cache = saved["verdicts"], {k: (v[0], v[1]) for k, v in saved["transcripts"].items()}
    runs = [(name, None) for name in args.detectors if name != "smart_turn+text" or not args.thresholds]
    if "smart_turn+text" in args.detectors:
        runs += [("smart_turn+text", thr) for thr in args.thresholds or []]
    results: dict[str, Any] = {}
    stt_secs = None if args.stt_ms < 0 else args.stt_ms / 1000
    for name, thr in runs:
        if name.endswith("+text") and stt is None:
            from parley.services.stt.whisper import WhisperSTT

            stt = WhisperSTT()
            await stt.prepare()
        extra: dict[str, Any] = {"detector": "silence" if name == "silence" else "smart_turn"}
        if thr is not None:
            extra["complete_threshold"] = thr
        settings = TurnSettings(**AGENT_TURN, **extra)
        rows = []
        for item in items:
            listener = Listener(stt if name.endswith("+text") else None, stt_cache, stt_secs)
            row = await run_one(item, settings, model, listener)
            rows.append({k: v for k, v in item.items() if k not in ("audio", "pause")} | row)
        if args.cache:
            args.cache.write_text(json.dumps({"verdicts": model.cache, "transcripts": stt_cache}))
        label = name if thr is None else f"{name}@{thr}"
        results[label] = {s: summarize([r for r in rows if r["set"] == s]) for s in args.sets}
        if args.rows:
            results[label]["rows"] = rows
        for s in args.sets:
            brief = {k: v for k, v in results[label][s].items() if k not in ("cut_offs", "slow_complete")}
            print(f"{label} [{s}]: {json.dumps(brief)}", file=sys.stderr)
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    items = await corpus(args.voices, args.sets)
    out: dict[str, Any] = {"detectors": await detectors(args, items) if args.detectors else {}}
    if args.v2v:
        out["voice_to_voice_complete"] = await voice_to_voice(args.v2v_voices, args.v2v_detectors, args.sets)
    out["turn_settings"] = TurnSettings(**AGENT_TURN, detector="smart_turn").model_dump()
    out |= {"inference_ms": inference_ms(), "cpu_model": cpu_model(), "cores": _cores(), "voices": args.voices}
    out["python"] = sys.version.split()[0]
    return out


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--voices", nargs="+", default=DEFAULT_VOICES)
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--detectors", nargs="*", default=DETECTORS)
    ap.add_argument("--thresholds", nargs="*", type=float, help="smart_turn+text at each complete_threshold")
    ap.add_argument(
        "--stt-ms",
        type=float,
        default=100.0,
        help="when the transcript reaches the judge, after the pause (default: 100, STT's p50 on 2 quiet cores in "
        "bench/latency-latest.json, so a busy machine does not make the figures kinder); -1: as measured here",
    )
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rows", action="store_true", help="include every turn's result")
    ap.add_argument(
        "--cache",
        type=Path,
        help="a JSON file of verdicts and transcripts per attempt, read and written (reruns skip the models)",
    )
    ap.add_argument("--v2v", action="store_true", help="also voice-to-voice of complete answers, whole stack")
    ap.add_argument("--v2v-voices", nargs="+", default=["joe", "us-female"])
    ap.add_argument("--v2v-detectors", nargs="+", default=["silence", "smart_turn"])
    args = ap.parse_args()
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
