"""A real `parley serve` process for API tests, on a free port, with its own data directory."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


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
        """`parley admin create-key`, exactly as the README tells a newcomer."""
        out = subprocess.run(
            [sys.executable, "-m", "parley.cli", "admin", "create-key", "--tenant", tenant, "--role", role],
            env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def assign_number(self, number: str, tenant: str) -> None:
        """`parley admin numbers assign`, as the README tells an operator: only then may the tenant map it."""
        subprocess.run(
            [sys.executable, "-m", "parley.cli", "admin", "numbers", "assign", number, "--tenant", tenant],
            env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
        )  # fmt: skip

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def running_service(data_dir: Path, **env: str) -> Iterator[Service]:
    port = free_port()
    full_env = {
        **os.environ,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_HOST": "127.0.0.1",
        "PARLEY_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "PARLEY_SIP_PORT": "0",  # tests that want the SIP endpoint pass a free port
        **env,
    }
    log = data_dir / "serve.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "serve"], env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
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


async def _admin_sql(sql: str) -> None:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


BACKENDS = ["sqlite", "postgres+redis+s3"]


@contextmanager
def backend_env(kind: str, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment that picks a backend: nothing for the embedded one, three settings for production parts.

    PostgreSQL gets a fresh database (dropped afterwards); S3 is SeaweedFS (see servers.py).
    """
    env: dict[str, str] = {}
    dbname = None
    if "postgres" in kind:
        dbname = f"parley_api_{secrets.token_hex(4)}"
        asyncio.run(_admin_sql(f"CREATE DATABASE {dbname}"))
        env["PARLEY_DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{dbname}"
    if "redis" in kind:
        env["PARLEY_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    if "s3" in kind:
        from .servers import BUCKET, S3_KEY, S3_SECRET

        env["PARLEY_STORAGE_URL"] = f"s3://{BUCKET}/api-{secrets.token_hex(3)}"
        env["PARLEY_S3_ENDPOINT_URL"] = request.getfixturevalue("seaweedfs")
        env["PARLEY_S3_ACCESS_KEY_ID"] = S3_KEY
        env["PARLEY_S3_SECRET_ACCESS_KEY"] = S3_SECRET
    try:
        yield env
    finally:
        if dbname:
            asyncio.run(_admin_sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"))
