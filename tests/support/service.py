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

ROOT = Path(__file__).resolve().parents[2]

# Every secret the tests hand a service (keys it created, secret settings) and every log a service wrote:
# tests/conftest.py fails the session if any log holds any of them (docs/security.md, finding 3).
SECRETS: set[str] = set()
SERVE_LOGS: list[Path] = []


def register_secret(*values: str | None) -> None:
    """A secret the logs must never show (anything shorter than 6 characters would match by chance)."""
    SECRETS.update(v for v in values if v and len(v) >= 6)


def secret_env_names() -> set[str]:
    """``PARLEY_*`` names of every ``SecretStr`` setting (parley.config)."""
    from pydantic import SecretStr

    from parley.config import Settings

    return {f"PARLEY_{n.upper()}" for n, f in Settings.model_fields.items() if SecretStr in _types(f.annotation)}


def _types(annotation: object) -> tuple[object, ...]:
    return (annotation, *getattr(annotation, "__args__", ()))


def leaked_secrets() -> list[str]:
    """``log: line N holds pk_abc…`` for every registered secret found in a registered log (secrets shortened)."""
    found = []
    for log in dict.fromkeys(SERVE_LOGS):
        text = log.read_text(errors="replace") if log.exists() else ""
        for secret in SECRETS:
            at = text.find(secret)
            if at >= 0:
                found.append(f"{log}: line {text.count(chr(10), 0, at) + 1} holds {secret[:6]}…")
    return found


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
        secret = out.stdout.strip().splitlines()[-1]
        register_secret(secret)
        return secret

    def assign_number(self, number: str, tenant: str) -> None:
        """`parley admin numbers assign`, as the README tells an operator: only then may the tenant map it."""
        subprocess.run(
            [sys.executable, "-m", "parley.cli", "admin", "numbers", "assign", number, "--tenant", tenant],
            env=self.env, capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
        )  # fmt: skip

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        hooks = {"response": [_register_created_secrets]}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, event_hooks=hooks)


def _register_created_secrets(response: httpx.Response) -> None:
    """Keys and talk tokens the API hands out join the secrets no log may hold."""
    request = response.request
    if request.method != "POST" or not response.is_success or not request.url.path.startswith("/v1/"):
        return
    if request.url.path.endswith(("/v1/keys", "/talk-token", "/recording-token")):
        response.read()
        try:
            body = response.json()
        except ValueError:
            return
        if isinstance(body, dict):
            register_secret(body.get("secret"), body.get("token"))


@contextmanager
def running_service(data_dir: Path, module: str = "parley.cli", **env: str) -> Iterator[Service]:
    """``python -m {module} serve``: parley.cli, or a test module that adds routes first (support/failing_routes.py)."""
    port = free_port()
    full_env = {
        **os.environ,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_HOST": "127.0.0.1",
        "PARLEY_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "PARLEY_SIP_PORT": "0",  # tests that want the SIP endpoint pass a free port
        "PARLEY_DRAIN_SECS": "3",  # SIGTERM at teardown drains live calls: not the production 30 s here
        **env,
    }
    log = data_dir / "serve.log"
    register_secret(*(value for name, value in full_env.items() if name in secret_env_names()))
    SERVE_LOGS.append(log)
    data_dir.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "serve"], env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
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
