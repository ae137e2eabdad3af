"""Load benchmark across workers: bench/load.py's Twilio callers through nginx (deploy/nginx/parley.conf, TLS)
to N `parley serve` workers on one PostgreSQL, each worker pinned to a core of its own.

Does capacity add up? Each step holds N calls (the media streams spread by nginx's least_conn) and reports what
the callers heard (gaps after a 60 ms jitter buffer, replies missing), each worker's CPU, and the playout's late
frames as the workers recorded them. Webhooks go to the first worker directly (not what is measured); the
streams go through nginx. ``--workers 1`` is the same path with one worker, the baseline.

Cores: worker k gets core k; nginx and the caller processes get the cores left over, or, on a machine with no
core left over (2 cores, 2 workers), share the workers' cores: their CPU is then taken from the workers and the
sum understates the capacity (the JSON says which).

    .venv/bin/python bench/load_workers.py --workers 2 --steps 100 200 300 --hold 20 [--vad silero] [--out f.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callers import caller_audio
from load import TOKEN, agent, client_process, cpu_model, cpu_seconds, pin, server_view, stream_params
from support import ROOT, free_port, running_service

CONF = ROOT / "deploy" / "nginx" / "parley.conf"


async def _sql(sql: str) -> None:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_nginx(root: Path, workers: list[str], stack: ExitStack) -> str:
    """nginx (one process, room for thousands of sockets) with the shipped config, only its marked addresses and
    paths replaced by the nginx test's renderer; its https URL."""
    sys.path.insert(0, str(ROOT))
    from tests.test_nginx import NGINX, make_certificate, render

    for sub in ("logs", "temp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    crt, pem = make_certificate(root)
    port = free_port()
    conf = render(CONF.read_text(), {
        "server parley-1:8000": f"server {workers[0]}", "server parley-2:8000": f"server {workers[1]}",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;", "listen 80;": f"listen 127.0.0.1:{free_port()};",
        "/etc/nginx/tls/tls.crt": str(crt), "/etc/nginx/tls/tls.key": str(pem),
        "/var/log/nginx/parley.access.log": "off", "root /var/www/acme;": f"root {root};",
    })  # fmt: skip
    (root / "parley.conf").write_text(conf.replace("access_log off parley;", "access_log off;"))
    t = root / "temp"
    user = "user root;\n" if os.geteuid() == 0 else ""
    (root / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nworker_rlimit_nofile 16384;\npid {root / 'nginx.pid'};\n"
        f"error_log {root / 'logs' / 'error.log'} warn;\nevents {{ worker_connections 8192; }}\nhttp {{\n"
        f"  access_log off;\n  client_body_temp_path {t}/b; proxy_temp_path {t}/p; fastcgi_temp_path {t}/f;\n"
        f"  uwsgi_temp_path {t}/u; scgi_temp_path {t}/s;\n  include {root / 'parley.conf'};\n}}\n"
    )
    proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"])
    stack.callback(proc.terminate)
    deadline = time.monotonic() + 15
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((root / "logs" / "error.log").read_text())
        time.sleep(0.05)
    os.environ["SSL_CERT_FILE"] = str(crt)  # the callers (forked below) trust the certificate made for this run
    return f"https://127.0.0.1:{port}"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def callers(*args: Any) -> None:
    """load.py's caller process; a process that fails still reports (its calls count as unanswered)."""
    try:
        client_process(*args)
    except Exception as exc:
        print(f"caller process failed: {exc!r}", file=sys.stderr, flush=True)
        args[5].put({"latencies": [], "gaps": 0, "frames": 0, "dropped": len(args[1]), "cpu_pct": 0.0})


def step(args: argparse.Namespace, n: int, n0: int, first: Any, wss: str, pids: list[int], audio: Any,
         free: list[int]) -> dict[str, Any]:  # fmt: skip
    """One step of ``n`` calls held for ``args.hold`` seconds."""
    doc_name = f"load-{args.vad}-silence"
    params = [stream_params(first.url, doc_name, n0 + i) for i in range(n)]
    for k, pid in enumerate(pids):
        pin(pid, k)  # worker k on core k
    cpu0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    ctx = mp.get_context("fork")
    queue: Any = ctx.Queue()
    k = min(args.clients, n)
    cpus = free or list(range(len(pids)))
    procs = [
        ctx.Process(target=callers,
                    args=(wss, params[i::k], args.hold, n0 + i * 100000, cpus[i % len(cpus)], queue, audio, 4.0))
        for i in range(k)
    ]  # fmt: skip
    for p in procs:
        p.start()
    parts = [queue.get(timeout=args.hold + 300) for _ in procs]
    t1 = time.monotonic()
    busy = [(cpu_seconds(p) - c) / (t1 - t0) for p, c in zip(pids, cpu0, strict=True)]
    for p in procs:
        p.join()
    time.sleep(3)  # the calls' records are closed
    with first.client(args.key) as c:
        server = server_view(c, args.seen)
    lat = sorted(x for part in parts for x in part["latencies"])
    return {
        "calls": n, "caller_view_gaps": sum(p["gaps"] for p in parts),
        "calls_without_reply": sum(p["dropped"] for p in parts), "replies": len(lat),
        "caller_view_latency_ms_p50": round(1000 * statistics.median(lat), 1) if lat else None,
        "caller_view_latency_ms_p95": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
        "worker_cpu_pct_of_one_core": [round(100 * b, 1) for b in busy],
        "caller_process_cpu_pct": round(sum(p["cpu_pct"] for p in parts), 1), "server": server,
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Long because it is the benchmark: the database, the workers, nginx, then each step in turn."""
    speech = "buzz" if args.vad == "energy" else "voice"
    audio = caller_audio(speech, -50.0)
    ncpu = len(os.sched_getaffinity(0))
    free = list(range(args.workers, ncpu))  # cores no worker has
    dbname = f"parley_bench_{secrets.token_hex(4)}"
    asyncio.run(_sql(f"CREATE DATABASE {dbname}"))
    db = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}"
    env = {"PARLEY_DATABASE_URL": db, "PARLEY_TWILIO_AUTH_TOKEN": TOKEN, "PARLEY_TWILIO_ACCOUNT_SID": "AC0",
           "PARLEY_TOKEN_SECRET": secrets.token_urlsafe(32), "PARLEY_TRUSTED_PROXIES": "127.0.0.1",
           "PARLEY_RATE_LIMIT_PER_ADDRESS": "1000000/minute", "PARLEY_RATE_LIMIT_PER_KEY": "1000000/minute",
           "PARLEY_TELEPHONY_RATE_LIMIT": "1000000/minute"}  # fmt: skip
    steps: list[dict[str, Any]] = []
    try:
        subprocess.run([sys.executable, "-m", "parley.cli", "db", "upgrade"], env={**os.environ, **env}, cwd=ROOT,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
            workers = [stack.enter_context(running_service(Path(d) / f"w{k}", **env, PARLEY_WORKER_ID=f"w{k}"))
                       for k in range(args.workers)]  # fmt: skip
            pids = [w.pid for w in workers]
            upstreams = [w.url.removeprefix("http://") for w in workers]
            url = start_nginx(Path(d) / "nginx", (upstreams * 2)[:2] if args.workers == 1 else upstreams, stack)
            args.key, args.seen = workers[0].create_key("bench"), set()
            with workers[0].client(args.key) as c:
                c.post("/v1/agents", json=agent(args.vad, "silence", {})).raise_for_status()
            wss = url.replace("https", "wss") + "/telephony/twilio/stream"
            n0 = 0
            for n in args.steps:
                steps.append(step(args, n, n0, workers[0], wss, pids, audio, free))
                print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
                n0 += n
    finally:
        asyncio.run(_sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
    held = [s["calls"] for s in steps if s["caller_view_gaps"] == 0 and s["calls_without_reply"] == 0]
    return {"benchmark": "load_workers", "workers": args.workers, "vad": args.vad, "speech": speech,
            "hold_s": args.hold, "cpu": cpu_model(), "cores": ncpu,
            "callers_and_nginx_on": f"cores {free}" if free else "the workers' cores (none left over)",
            "load_average_at_end": os.getloadavg()[0], "max_calls_zero_gaps": max(held) if held else 0,
            "steps": steps}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument("--hold", type=float, default=20.0, help="seconds each step holds its calls")
    ap.add_argument("--clients", type=int, default=2, help="caller processes")
    ap.add_argument("--vad", choices=["energy", "silero"], default="energy", help="the agent's vad.provider")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    text = json.dumps(run(args), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
