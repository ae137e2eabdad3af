"""End-of-turn detection on synthetic callers: false cut-offs and end-of-turn delay. Prints JSON.

Two kinds of turn, spoken by Piper's Joe and three espeak-ng voices (16 kHz):

* **paused**: a sentence with a mid-sentence pause ("I'd like to book an appointment
  for … next Tuesday"). It is synthesised whole with a comma at the break (so the
  first half has the continuing intonation of a phrase that goes on), and the
  comma's short gap is replaced by 0.5–1.3 s of silence. A **false cut-off** is an
  end of turn declared inside that pause.
* **complete**: short whole answers ("Yes.", "Saturday please."). The **end-of-turn
  delay** is from the true end of speech (found in the audio) to the ``EndOfTurn``.

Each turn goes through the real :class:`TurnTaker` with Silero VAD, once per
detector: ``silence`` (the fixed ``end_of_turn_secs``), ``smart_turn`` (the model on
the audio, as the pipeline runs it), and ``smart_turn+text`` (plus the transcript
cue: Whisper tiny.en transcribes each speculative attempt and its text reaches the
judge as it would in a call, ``stt_ms`` after the pause). Times are audio time, so
the figures do not depend on the machine's load; the model's own inference time is
reported beside them (``inference_ms``), measured here.

    .venv/bin/python bench/turns.py [--voices joe us-female ...] [--out bench/turns-latest.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.document import InterruptionSettings, TurnSettings, VADSettings
from parley.calls.synthetic_caller import speak, speech_bounds
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

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".corpus" / "turns"
RATE = 16000
PAUSED = [
    ("I'd like to book an appointment for", "next Tuesday."),
    ("My number is five five five", "zero one three four."),
    ("Can I speak to", "the dentist please?"),
    ("I was wondering if", "you are open on Sunday."),
    ("I need to cancel my", "appointment on Friday."),
    ("Could you tell me", "how much a cleaning costs?"),
    ("I'm calling about", "my daughter's check-up."),
    ("We'd like to come in on", "Thursday afternoon."),
]
COMPLETE = [
    "Yes.",
    "No, thank you.",
    "Saturday please.",
    "That's all, thanks.",
    "Next Tuesday at ten.",
    "My number is five five five, zero one three four.",
    "What time do you open tomorrow?",
    "Can I book a cleaning?",
]
PAUSES = [0.5, 0.7, 0.9, 1.1, 1.3]
VOICES = ["joe", "us-female", "gb-male", "us-male-fast"]
DETECTORS = {
    "silence": {"detector": "silence"},
    "smart_turn": {"detector": "smart_turn"},
    "smart_turn+text": {"detector": "smart_turn"},
}
AGENT_TURN = {"pause_secs": 0.064, "end_of_turn_secs": 0.4}  # the defaults (the receptionist uses 0.35)


async def spoken(text: str, voice: str) -> np.ndarray:
    """``text`` in ``voice``, cached under bench/.corpus (synthesis is the slow part)."""
    key = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:16]
    path = CACHE / f"{voice}-{key}.npy"
    if path.exists():
        return np.load(path)
    samples = await speak(text, voice=voice, rate=RATE)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, samples)
    return samples


def comma_gap(samples: np.ndarray, level_dbfs: float = -45.0) -> tuple[int, int] | None:
    """The longest quiet run inside the speech (the comma's pause), as sample indices."""
    start, end = speech_bounds(samples, RATE)
    hop = RATE // 100
    n = samples.size // hop
    peak = np.abs(samples[: n * hop].astype(np.float32)).reshape(n, hop).max(axis=1)
    quiet = peak < 32768 * 10 ** (level_dbfs / 20)
    best, run_start = (0, 0), None
    for i in range(int(start * 100) + 1, int(end * 100)):
        if quiet[i] and run_start is None:
            run_start = i
        elif not quiet[i] and run_start is not None:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = None
    return (best[0] * hop, best[1] * hop) if best[1] - best[0] >= 5 else None  # at least 50 ms


async def corpus(voices: list[str]) -> list[dict[str, Any]]:
    """Every turn as {kind, voice, text, audio, speech_end, pause: (start, end) or None}."""
    lead, tail = np.zeros(RATE // 2, np.int16), np.zeros(int(2.5 * RATE), np.int16)
    items: list[dict[str, Any]] = []
    for voice in voices:
        for first, second in PAUSED:
            whole = await spoken(f"{first}, {second}", voice)
            gap = comma_gap(whole)
            if gap is None:
                print(f"skipped (no comma gap): {voice} {first!r}", file=sys.stderr)
                continue
            for pause in PAUSES:
                audio = np.concatenate([lead, whole[: gap[0]], np.zeros(int(pause * RATE), np.int16)])
                resume = audio.size / RATE
                audio = np.concatenate([audio, whole[gap[1] :], tail])
                p0 = (lead.size + gap[0]) / RATE
                end = speech_bounds(audio, RATE)[1]
                text = f"{first} … {second}"
                items.append({"kind": "paused", "voice": voice, "text": text, "pause_secs": pause, "audio": audio})
                items[-1].update(pause=(p0, resume), speech_end=end)
        for text in COMPLETE:
            audio = np.concatenate([lead, await spoken(text, voice), tail])
            items.append({"kind": "complete", "voice": voice, "text": text, "audio": audio, "pause": None})
            items[-1]["speech_end"] = speech_bounds(audio, RATE)[1]
    return items


class Listener(Processor):
    """Collects end-of-turn frames; with an STT, transcribes each speculative attempt (the text cue)."""

    def __init__(self, stt: STT | None) -> None:
        super().__init__()
        self.stt = stt
        self.ends: list[float] = []
        self.texts: list[tuple[float, int, str]] = []  # (audio time to deliver it, turn id, text)
        self.stt_ms: list[float] = []
        self.heard: list[str] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, EndOfTurn):
            self.ends.append(frame.t)
        elif isinstance(frame, TurnResumed):  # the transcriber cancels the older attempt's STT
            self.texts = [x for x in self.texts if x[1] != frame.turn_id]
        elif isinstance(frame, UserTurn) and self.stt is not None:
            t0 = time.perf_counter()
            text = await self.stt.transcribe(frame.pcm)
            secs = time.perf_counter() - t0
            self.stt_ms.append(secs * 1000)
            self.texts.append((frame.t + secs, frame.turn_id, text))
            self.heard.append(text)


async def run_one(item: dict[str, Any], settings: TurnSettings, stt: STT | None) -> dict[str, Any]:
    """One turn through a fresh TurnTaker, fed 20 ms frames; the transcript cue arrives at its audio time."""
    judge = EndOfTurnJudge(settings, expect_transcripts=stt is not None)
    taker = TurnTaker(SileroVAD(), VADSettings(), settings, InterruptionSettings(), judge=judge)
    listener = Listener(stt)
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
    out: dict[str, Any] = {"ends": [round(e, 3) for e in listener.ends], "stt_ms": listener.stt_ms}
    out["p"] = [round(p, 3) for p in taker.judge.probabilities]
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
    """False cut-offs by pause length; end-of-turn delay on complete turns."""
    paused = [r for r in rows if r["kind"] == "paused"]
    complete = [r for r in rows if r["kind"] == "complete"]
    by_pause = {}
    for p in PAUSES:
        sel = [r for r in paused if r["pause_secs"] == p]
        by_pause[str(p)] = round(sum(r["cut_off"] for r in sel) / len(sel), 3) if sel else None
    upto1 = [r for r in paused if r["pause_secs"] <= 1.0]
    delays = [r["delay_ms"] for r in complete if "delay_ms" in r]
    return {
        "false_cutoff_rate_pauses_upto_1s": round(sum(r["cut_off"] for r in upto1) / max(1, len(upto1)), 3),
        "false_cutoff_rate_by_pause": by_pause,
        "complete_eot_delay_ms": {"p50": pct(delays, 50), "p95": pct(delays, 95), "max": pct(delays, 100)},
        "complete_missed": sum("delay_ms" not in r for r in complete),
        "n_paused": len(paused),
        "n_complete": len(complete),
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


async def voice_to_voice(voices: list[str], detectors: list[str]) -> dict[str, Any]:
    """Complete answers through the whole embedded stack at real time (receptionist agent, greeting off)."""
    from parley.agent.document import load_agent
    from parley.audio import write_wav
    from parley.calls.session import Services
    from parley.calls.simulate import simulate_call

    work = Path(tempfile.mkdtemp(prefix="parley-turns-"))
    files = []
    for voice in voices:
        for i, text in enumerate(COMPLETE):
            samples = np.concatenate([np.zeros(RATE // 5, np.int16), await spoken(text, voice)])
            write_wav(work / f"{voice}-{i}.wav", samples, RATE)
            files.append((work / f"{voice}-{i}.wav", speech_bounds(samples, RATE)[1]))
    base = load_agent(ROOT / "examples" / "agents" / "receptionist.yaml").model_copy(update={"greeting": ""})
    out: dict[str, Any] = {}
    for name in detectors:
        agent = base.model_copy(update={"turn": base.turn.model_copy(update=DETECTORS[name])})
        services = await Services.create(agent)
        v2v = []
        try:
            for path, true_end in files:
                report = (await simulate_call(agent, path, work / "out.wav", services=services)).as_dict()
                times = report["turns"][0]["times"] if report["turns"] else {}
                if "first_audio_out" in times:
                    v2v.append((times["first_audio_out"] - report["caller_audio_offset"] - true_end) * 1000)
        finally:
            await services.aclose()
        out[name] = {"p50_ms": pct(v2v, 50), "p95_ms": pct(v2v, 95), "n": len(v2v), "answered_of": len(files)}
        print(f"v2v {name}: {out[name]}", file=sys.stderr)
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    items = await corpus(args.voices)
    stt: STT | None = None
    results: dict[str, Any] = {}
    for name, extra in DETECTORS.items():
        if name not in args.detectors:
            continue
        if name.endswith("+text") and stt is None:
            from parley.services.stt.whisper import WhisperSTT

            stt = WhisperSTT()
            await stt.prepare()
        settings = TurnSettings(**AGENT_TURN, **extra)
        rows = []
        for item in items:
            row = await run_one(item, settings, stt if name.endswith("+text") else None)
            rows.append({k: v for k, v in item.items() if k not in ("audio", "pause")} | row)
        results[name] = summarize(rows)
        results[name]["misses"] = [
            f"{r['voice']}: {r['text']}" + (f" (pause {r['pause_secs']} s)" if r["kind"] == "paused" else "")
            for r in rows
            if r.get("cut_off") or (r["kind"] == "complete" and r.get("delay_ms", 1e9) > 1000)
        ]
        if args.rows:
            results[name]["rows"] = rows
        brief = {k: v for k, v in results[name].items() if k not in ("misses", "rows")}
        print(f"{name}: {json.dumps(brief)}", file=sys.stderr)
    if args.v2v:
        names = [d for d in args.detectors if not d.endswith("+text")]  # the live pipeline sends no transcripts up
        results["voice_to_voice_complete"] = await voice_to_voice(args.v2v_voices, names)
    return {
        "detectors": results,
        "turn_settings": TurnSettings(**AGENT_TURN, detector="smart_turn").model_dump(),
        "inference_ms": inference_ms(),
        "cpu_model": cpu_model(),
        "voices": args.voices,
        "python": sys.version.split()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voices", nargs="+", default=VOICES)
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--rows", action="store_true", help="include every turn's result")
    ap.add_argument("--v2v", action="store_true", help="also voice-to-voice of complete answers, whole stack")
    ap.add_argument("--v2v-voices", nargs="+", default=["joe", "us-female"])
    args = ap.parse_args()
    out = asyncio.run(run(args))
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
