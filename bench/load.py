"""Load benchmark: N concurrent Twilio Media Streams calls against one Parley process.

The agent has canned STT/LLM and tone TTS, so the media path and the listener are
what is measured: WebSocket messages, G.711, VAD windows, turn-taking, the 20 ms
playout, marks, recording and the call record. ``--vad energy`` (the default, for
comparison with earlier figures) is the model-free VAD; ``--vad silero`` is the
default listener's VAD and ``--turn smart_turn`` adds the Smart Turn model at every
pause. Every thread of the Parley process is pinned to one CPU core; the simulated
callers run on the other cores (one process per core).

Each caller speaks in real-time-paced 20 ms µ-law frames over line noise
(``--noise-dbfs``), waits for the reply, and speaks again ``--listen`` s after it
starts. With ``--speech voice`` (the default with Silero: it does not take a buzz for
speech) the utterances are synthesized speech (Piper and espeak-ng voices), one of
them with a 0.4 s pause mid-sentence. Measured per step of N calls:

- gaps: a reply frame that arrived after a 60 ms jitter buffer would have played it;
- latency: end of the caller's speech (last speech frame sent) → first reply frame;
- CPU: Parley's user+system time over the steady window, as % of one core and per call;
- memory: Parley's RSS, and its growth per call;
- the listener: Silero windows run vs skipped by the gate and the mean batch, Smart
  Turn inferences per call-minute (and requests dropped because the caller resumed).

    .venv/bin/python bench/load.py [--steps 50 100 150 200 250] [--hold 30] [--out bench/load-latest.json]
    .venv/bin/python bench/load.py --vad silero --turn smart_turn --steps 50 100 200 --out load-listener.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import httpx
import websockets
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))

from callers import caller_audio  # noqa: E402
from support import running_service  # noqa: E402

TOKEN = "bench-auth-token"
METRICS_TOKEN = "bench-metrics-token"
JITTER_S = 0.06


def agent(vad: str, turn: str, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"load-{vad}-{turn}",
        "system_prompt": "Canned replies for the load benchmark.",
        "greeting": "Hello, thanks for calling.",
        "vad": {"provider": vad, "options": options},
        "turn": {"detector": turn},
        "stt": {"provider": "canned", "options": {"text": "what time do you open"}},
        "llm": {"provider": "canned", "options": {"default": "We open at nine in the morning."}},
        "tts": {"provider": "tone", "fallback": None},
    }


class Caller:
    """One simulated Twilio call: paced media out, reply frames in, gaps and latencies counted."""

    def __init__(self, url: str, params: dict[str, str], n: int, audio: Any, listen: float) -> None:
        self.url, self.params, self.sid = url, params, f"MZ{n:032d}"
        utterances, noise = audio
        self.utterances = cycle(islice(cycle(utterances), n % len(utterances), n % len(utterances) + len(utterances)))
        self.speech: list[str] = next(self.utterances)
        self.silence = cycle(islice(cycle(noise), n % len(noise), n % len(noise) + len(noise)))
        self.listen = listen
        self.seq = 0
        self.pos = -1  # index into speech while speaking
        self.speech_end = 0.0
        self.awaiting = False
        self.latencies: list[float] = []
        self.gaps = 0
        self.frames_in = 0
        self.last_in = 0.0
        self.play_start = 0.0
        self.k = 0
        self.ws: Any = None
        self.alive = False
        self.next_talk = 0.0

    def msg(self, event: str, body: str) -> str:
        self.seq += 1
        return f'{{"event":"{event}","sequenceNumber":"{self.seq}","streamSid":"{self.sid}",{body}}}'

    async def connect(self) -> None:
        self.ws = await websockets.connect(self.url, max_queue=None, compression=None)
        start = {"accountSid": "AC0", "streamSid": self.sid, "callSid": self.params["call_sid"], "tracks": ["inbound"],
                 "customParameters": self.params,
                 "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.ws.send(self.msg("start", f'"start":{json.dumps(start)}'))
        self.alive = True
        self.next_talk = time.monotonic() + 3.0  # after the greeting

    def tick(self, now: float) -> str | None:
        if not self.alive:
            return None
        if self.pos < 0 and not self.awaiting and now >= self.next_talk:
            self.pos = 0
        if self.pos >= 0:
            payload = self.speech[self.pos]
            self.pos += 1
            if self.pos >= len(self.speech):
                self.pos, self.speech_end, self.awaiting = -1, now, True
                self.speech = next(self.utterances)
        else:
            payload = next(self.silence)
        return self.msg("media", f'"media":{{"payload":"{payload}"}}')

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if '"media"' in message[:40]:
                    self.frames_in += 1
                    if self.awaiting and self.pos < 0:  # the reply to the caller's whole utterance
                        self.latencies.append(now - self.speech_end)
                        self.awaiting = False
                        self.next_talk = now + self.listen
                    if now - self.last_in > 0.3:  # a new reply starts playing after the jitter buffer
                        self.play_start, self.k = now + JITTER_S, 0
                    else:
                        self.k += 1
                        if now > self.play_start + self.k * 0.02:
                            self.gaps += 1
                            self.play_start, self.k = now, 0
                    self.last_in = now
                elif '"mark"' in message[:40]:
                    name = json.loads(message)["mark"]["name"]
                    await self.ws.send(self.msg("mark", f'"mark":{{"name":"{name}"}}'))
        except websockets.ConnectionClosed:
            pass
        self.alive = False

    async def stop(self) -> None:
        if self.ws is not None and self.alive:
            self.alive = False
            await self.ws.send(self.msg("stop", '"stop":{}'))
            await self.ws.close()


async def drive(url: str, params: list[dict[str, str]], hold: float, first: int, audio: Any, listen: float) -> Any:
    callers = [Caller(url, p, first + i, audio, listen) for i, p in enumerate(params)]
    for i in range(0, len(callers), 10):  # ramp: 10 connections at a time
        await asyncio.gather(*(c.connect() for c in callers[i : i + 10]))
    readers = [asyncio.create_task(c.receive()) for c in callers]
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < hold:
        k += 1
        await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
        now = time.monotonic()
        for c in callers:
            m = c.tick(now)
            if m is not None:
                try:
                    await c.ws.send(m)
                except websockets.ConnectionClosed:
                    c.alive = False
    await asyncio.gather(*(c.stop() for c in callers), return_exceptions=True)
    for r in readers:
        r.cancel()
    return {"latencies": [x for c in callers for x in c.latencies], "gaps": sum(c.gaps for c in callers),
            "frames": sum(c.frames_in for c in callers), "dropped": sum(not c.latencies for c in callers)}  # fmt: skip


def client_process(url: str, params: list[dict[str, str]], hold: float, first: int, cpu: int | None, out: Any,
                   audio: Any, listen: float) -> None:  # fmt: skip
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    cpu0, t0 = time.process_time(), time.monotonic()
    result = asyncio.run(drive(url, params, hold, first, audio, listen))
    result["cpu_pct"] = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
    out.put(result)


def server_view(client: httpx.Client, seen: set[str]) -> dict[str, Any]:
    """The calls of the step as Parley recorded them: late playout frames and voice-to-voice per turn."""
    calls: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = client.get("/v1/calls", params={"transport": "twilio", "limit": 200, "offset": offset}).json()
        calls += [c for c in page if c["id"] not in seen]
        if len(page) < 200:
            break
        offset += 200
    late, frames, v2v = 0, 0, []
    for c in calls:
        seen.add(c["id"])
        detail = client.get(f"/v1/calls/{c['id']}").json()
        for e in detail["events"]:
            if e["kind"] == "media":
                late += e["data"]["late_frames"]
                frames += e["data"]["speech_frames_out"]
        v2v += [t["voice_to_voice"] for t in detail["turns"] if t["turn"] > 0 and t["voice_to_voice"] is not None]
    v2v.sort()
    return {"calls_recorded": len(calls), "speech_frames_out": frames, "late_frames": late,
            "voice_to_voice_ms_p50": round(1000 * statistics.median(v2v), 1) if v2v else None,
            "voice_to_voice_ms_p95": round(1000 * v2v[int(0.95 * (len(v2v) - 1))], 1) if v2v else None}  # fmt: skip


def pin(pid: int, cpu: int) -> int:
    """Every thread of ``pid`` onto ``cpu`` (threads started later inherit it from their creator); how many."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except OSError:  # the thread ended
            pass
    return len(tasks)


def counters(path: Path) -> dict[str, float]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def listener_view(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], minutes: float) -> Any:
    """Silero runs and batches, Smart Turn inferences: the step's share of the process's counters."""
    d = {k: {f: after[k].get(f, 0) - before[k].get(f, 0) for f in after[k]} for k in after}
    vad, turn = d.get("vad", {}), d.get("turn", {})
    windows = vad.get("runs", 0) + vad.get("skips", 0)
    return {"vad_windows_run_pct": round(100 * vad.get("runs", 0) / windows, 1) if windows else None,
            "vad_mean_batch": round(vad["batched"] / vad["batches"], 1) if vad.get("batches") else None,
            "smart_turn_requests_per_call_minute": round(turn.get("requests", 0) / minutes, 2),
            "smart_turn_inferences_per_call_minute": round(turn.get("inferences", 0) / minutes, 2),
            "smart_turn_dropped": turn.get("dropped", 0), "smart_turn_failed": turn.get("failed", 0),
            "smart_turn_ms_per_inference": round(1000 * turn["cpu_s"] / turn["inferences"], 1)
            if turn.get("inferences") else None}  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stream_params(base: str, agent: str, n: int) -> dict[str, str]:
    form = {"CallSid": f"CA{n:032d}", "AccountSid": "AC0", "From": f"+1555{n:07d}", "To": "+15550000000"}
    path = f"/telephony/twilio/voice?agent={agent}"
    sig = RequestValidator(TOKEN).compute_signature(base + path, form)
    r = httpx.post(base + path, data=form, headers={"X-Twilio-Signature": sig}, timeout=30)
    r.raise_for_status()
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    assert stream is not None
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 100, 150, 200, 250])
    ap.add_argument("--hold", type=float, default=30.0, help="seconds each step holds its calls")
    ap.add_argument("--clients", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="caller processes")
    ap.add_argument("--vad", choices=["energy", "silero"], default="energy", help="the agent's vad.provider")
    ap.add_argument("--vad-options", type=json.loads, default={}, help='e.g. \'{"gate": false, "batch": false}\'')
    ap.add_argument("--turn", choices=["silence", "smart_turn"], default="silence", help="the agent's turn.detector")
    ap.add_argument("--speech", choices=["buzz", "voice"], help="caller audio (default: buzz with energy, else voice)")
    ap.add_argument("--noise-dbfs", type=float, default=-50.0, help="line noise under the caller (-200: none)")
    ap.add_argument("--listen", type=float, default=4.0, help="seconds from a reply's start to the next utterance")
    ap.add_argument("--metrics", choices=["on", "off", "both"], default="on",
                    help="Prometheus metrics collected (and scraped every 5 s) or PARLEY_METRICS_ENABLED=false; "
                    "both: off then on, with the CPU per call of each")  # fmt: skip
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    modes = ["off", "on"] if args.metrics == "both" else [args.metrics]
    runs = {mode: run_steps(args, mode) for mode in modes}
    report = runs[modes[-1]]
    if len(runs) == 2:
        report["metrics_cpu_per_call"] = {
            str(on["calls"]): {"off_ms_per_call_second": off["server_cpu_ms_per_call_second"],
                               "on_ms_per_call_second": on["server_cpu_ms_per_call_second"],
                               "on_vs_off_pct": round(100 * (on["server_cpu_ms_per_call_second"]
                                                             / off["server_cpu_ms_per_call_second"] - 1), 1)}
            for off, on in zip(runs["off"]["steps"], runs["on"]["steps"], strict=True)
        }  # fmt: skip
        report["steps_metrics_off"] = runs["off"]["steps"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def scrape_every(url: str, token: str, stop: threading.Event) -> None:
    """Prometheus' share of the cost: GET /metrics every 5 s, as a scrape config would."""
    while not stop.wait(5.0):
        try:
            httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        except httpx.HTTPError:
            pass


def run_steps(args: argparse.Namespace, metrics: str) -> dict[str, Any]:
    """Long because it is the benchmark: one Parley process, then each step of N calls measured in turn."""
    speech = args.speech or ("buzz" if args.vad == "energy" else "voice")
    audio = caller_audio(speech, args.noise_dbfs if args.noise_dbfs > -200 else None)
    doc = agent(args.vad, args.turn, args.vad_options)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = cpus[0], (cpus[1:] or cpus)
    with tempfile.TemporaryDirectory() as d:
        stats = {"vad": Path(d) / "vad-stats.json", "turn": Path(d) / "turn-stats.json"}
        env = {
            "PARLEY_VAD_STATS": str(stats["vad"]),
            "PARLEY_SMART_TURN_STATS": str(stats["turn"]),
            "PARLEY_TWILIO_AUTH_TOKEN": TOKEN,
            "PARLEY_TWILIO_ACCOUNT_SID": "AC0",
            "PARLEY_RATE_LIMIT_PER_ADDRESS": "1000000/minute",
            "PARLEY_RATE_LIMIT_PER_KEY": "1000000/minute",
            "PARLEY_METRICS_ENABLED": "true" if metrics == "on" else "false",
            "PARLEY_METRICS_TOKEN": METRICS_TOKEN,
        }
        stop = threading.Event()
        with running_service(Path(d), **env) as svc:
            if metrics == "on":
                threading.Thread(target=scrape_every, args=(svc.url, METRICS_TOKEN, stop), daemon=True).start()
            pid = svc.pid
            threads = pin(pid, server_cpu)  # Parley gets one core
            print(f"parley pid {pid} ({threads} threads) on cpu {server_cpu}", file=sys.stderr, flush=True)
            key = svc.create_key("bench")
            with svc.client(key) as c:
                c.post("/v1/agents", json=doc).raise_for_status()
            ws_url = svc.url.replace("http", "ws") + "/telephony/twilio/stream"
            results: list[dict[str, Any]] = []
            seen: set[str] = set()
            n0 = 0
            for n in args.steps:
                params = [stream_params(svc.url, doc["name"], n0 + i) for i in range(n)]
                pin(pid, server_cpu)
                counted = {k: counters(p) for k, p in stats.items()}
                rss0, cpu0, t0 = rss_mb(pid), cpu_seconds(pid), time.monotonic()
                queue: Any = mp.get_context("fork").Queue()
                k = min(args.clients, len(client_cpus), n)
                procs = [mp.get_context("fork").Process(
                    target=client_process,
                    args=(ws_url, params[i::k], args.hold, n0 + i * 100000, client_cpus[i % len(client_cpus)], queue,
                          audio, args.listen))
                    for i in range(k)]  # fmt: skip
                for p in procs:
                    p.start()
                parts = [queue.get(timeout=args.hold + 300) for _ in procs]
                cpu1, t1, rss1 = cpu_seconds(pid), time.monotonic(), rss_mb(pid)
                for p in procs:
                    p.join()
                time.sleep(3)  # the calls' records are closed
                with svc.client(key) as c:
                    server = server_view(c, seen)
                listener = listener_view(counted, {k: counters(p) for k, p in stats.items()}, n * args.hold / 60)
                lat = sorted(x for part in parts for x in part["latencies"])
                frames, gaps = sum(p["frames"] for p in parts), sum(p["gaps"] for p in parts)
                busy = (cpu1 - cpu0) / (t1 - t0)
                results.append({
                    "calls": n, "server": server, "caller_view_reply_frames": frames, "caller_view_gaps": gaps,
                    "calls_without_reply": sum(p["dropped"] for p in parts),
                    "caller_process_cpu_pct": round(max(p["cpu_pct"] for p in parts), 1),
                    "caller_view_latency_ms_p50": round(1000 * statistics.median(lat), 1) if lat else None,
                    "caller_view_latency_ms_p95": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
                    "replies": len(lat), "server_cpu_pct_of_one_core": round(100 * busy, 1),
                    "server_cpu_ms_per_call_second": round(1000 * busy / n, 3),
                    "server_rss_mb": round(rss1, 1), "rss_growth_mb_per_call": round((rss1 - rss0) / n, 3),
                    "listener": listener,
                })  # fmt: skip
                print(json.dumps(results[-1]), file=sys.stderr)
                n0 += n
            stop.set()
    # a gap is what a caller hears: a reply frame that arrived after a 60 ms jitter buffer needed it
    held = [r["calls"] for r in results if r["caller_view_gaps"] == 0 and r["calls_without_reply"] == 0
            and r["server_cpu_pct_of_one_core"] < 100]  # fmt: skip
    report = {"benchmark": "load", "transport": "twilio", "server_cores": 1, "hold_s": args.hold, "vad": args.vad,
              "vad_options": args.vad_options,
              "turn": args.turn, "speech": speech, "metrics": metrics,
              "noise_dbfs": args.noise_dbfs, "listen_s": args.listen,
              "cpu": cpu_model(), "load_average_at_end": os.getloadavg()[0],
              "max_calls_zero_gaps": max(held) if held else 0, "target_calls_per_core": 200,
              "steps": results}  # fmt: skip
    return report


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
