"""A real Chroma server for the ``chroma`` vector index's tests, installed once and started on a free port.

The server (PyPI ``chromadb``, whose ``chroma run`` is its Rust server) and the client Parley uses
(``chromadb-client``) both install the module ``chromadb``, so the server lives in its own venv, cached at
``~/.cache/parley-test/chroma-<version>`` (``PARLEY_TEST_CACHE`` moves it) and made again when missing or broken.
Installing needs PyPI: without it the fixture fails with the reason rather than skipping, as CI installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.servers import _free_port, _stop, _wait

#: the server matching the client pinned for the `chroma` extra (chromadb-client==1.5.9)
CHROMA_VERSION = "1.5.9"
CACHE = Path(os.environ.get("PARLEY_TEST_CACHE", Path.home() / ".cache" / "parley-test"))
VENV = CACHE / f"chroma-{CHROMA_VERSION}"
CHROMA = VENV / "bin" / "chroma"
INSTALL_TIMEOUT_S = 600


def _installed() -> bool:
    if not CHROMA.exists():
        return False
    probe = [str(VENV / "bin" / "python"), "-c", "import chromadb, sys; sys.stdout.write(chromadb.__version__)"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == CHROMA_VERSION


def install_chroma() -> Path:
    """The ``chroma`` executable of the cached server venv, installing it (about a minute) when missing."""
    if _installed():
        return CHROMA
    shutil.rmtree(VENV, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(VENV)],
             [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-input", "-q",
              f"chromadb=={CHROMA_VERSION}"]]  # fmt: skip
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(VENV, ignore_errors=True)
            pytest.fail(f"could not install the Chroma test server ({e}); these tests need PyPI")
        if done.returncode:
            shutil.rmtree(VENV, ignore_errors=True)
            pytest.fail(f"`{' '.join(step[-2:])}` failed; the Chroma tests need PyPI:\n{done.stderr[-3000:]}")
    if not _installed():
        pytest.fail(f"chromadb=={CHROMA_VERSION} installed into {VENV} but `chroma` does not run")
    return CHROMA


class ChromaServer:
    """One `chroma run` on 127.0.0.1; :meth:`stop` ends it (the tests of a server going away call it early)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        chroma = install_chroma()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "chroma.log"
        args = [str(chroma), "run", "--path", str(root / "data"), "--host", "127.0.0.1", "--port", str(self.port)]
        full_env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1", **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=full_env)
        try:
            _wait(self._beats, self.proc, self.log, "Chroma", 60)
        except BaseException:
            self.stop()
            raise

    def _beats(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v2/heartbeat", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self.proc.poll() is None:
            _stop(self.proc)


@pytest.fixture(scope="session")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Chroma server for the whole session; yields its http://127.0.0.1:<port> URL."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma"))
    try:
        yield server.url
    finally:
        server.stop()


def wait_closed(port: int, timeout: float = 10) -> None:
    """Until nothing answers on ``port`` any more (a stopped server's socket is gone)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
