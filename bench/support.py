"""What the benchmarks share: where things are, the CPU's name, and `parley serve` as a child process.

The benchmarks use Parley as an operator does (the CLI, the API), never the test suite: tests/support/service.py
adds what only tests need (every secret and log registered for the session's leak check), this keeps the rest.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RECEPTIONIST = ROOT / "examples" / "agents" / "receptionist.yaml"


def cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` is empty on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    env: dict[str, str]
    log: Path
    pid: int = 0

    def create_key(self, tenant: str, role: str = "admin") -> str:
        """`parley admin create-key`, as the README tells a newcomer."""
        out = subprocess.run(
            [sys.executable, "-m", "parley.cli", "admin", "create-key", "--tenant", tenant, "--role", role],
            env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def running_service(data_dir: Path, **env: str) -> Iterator[Service]:
    """`parley serve` on a free local port with its own data directory, until the block ends (log: serve.log)."""
    port = free_port()
    full_env = {**os.environ, "PARLEY_DATA_DIR": str(data_dir), "PARLEY_HOST": "127.0.0.1",
                "PARLEY_PORT": str(port), "HF_HUB_OFFLINE": "1", "PARLEY_SIP_PORT": "0", **env}  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve"], env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"parley serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Service(url, full_env, log, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
