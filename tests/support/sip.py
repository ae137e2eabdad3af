"""Helpers for the SIP tests: free UDP ports, SIPp runs, a `parley serve` with its SIP endpoint, 8 kHz WAVs."""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from parley.audio import pcm16_to_ulaw

from .service import ROOT, Service, running_service

SIPP_DIR = Path(__file__).parents[1] / "sipp"
SIPP_PCAPS = Path("/usr/share/sip-tester")
RECEPTIONIST = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
RECEPTIONIST["llm"]["options"]["max_tokens"] = 24  # short answers: the calls here stay short


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: `make test` installs it (scripts/install-test-deps.sh)")
    return path


def free_udp_port(even: bool = False) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even or port % 2 == 0:
            return port


def rtp_range() -> str:
    """A private RTP port range, so parallel services do not compete for the same ports."""
    base = random.randrange(30000, 60000, 200)
    return f"{base}-{base + 199}"


@dataclass
class SipService:
    service: Service
    sip_port: int
    key: str
    agent: dict


@contextmanager
def sip_service(data_dir: Path, agent_doc: dict | None = None, **env: str) -> Iterator[SipService]:
    """`parley serve` with its SIP endpoint on a free port, a tenant key and one agent."""
    port = free_udp_port()
    with running_service(data_dir, PARLEY_SIP_PORT=str(port), PARLEY_SIP_RTP_PORTS=rtp_range(), **env) as svc:
        key = svc.create_key("sip-tests")
        with svc.client(key) as c:
            r = c.post("/v1/agents", json=agent_doc or RECEPTIONIST)
            assert r.status_code == 201, r.text
            yield SipService(svc, port, key, r.json())


def sipp_command(
    scenario: str,
    workdir: Path,
    target: str | None,
    user: str = "service",
    *,
    subst: dict[str, str] | None = None,
    local_port: int | None = None,
) -> list[str]:
    """SIPp running ``tests/sipp/<scenario>.xml`` for one call (as UAS when ``target`` is None).

    ``subst`` fills ``@NAME@`` placeholders (file paths, pause lengths) before SIPp reads the scenario.
    """
    sipp = need("sipp")
    text = (SIPP_DIR / f"{scenario}.xml").read_text()
    for name, value in (subst or {}).items():
        text = text.replace(f"@{name}@", value)
    if "play_pcap_audio" in text and os.geteuid() != 0:
        pytest.fail("SIPp plays pcaps on a raw socket: run the SIP tests as root (as `make test` in CI does)")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{scenario}.xml"
    path.write_text(text)
    cmd = [sipp, "-sf", str(path), "-m", "1", "-timeout", "60s", "-timeout_error", "-nostdin",
           "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(local_port or free_udp_port()),
           "-mp", str(free_udp_port(even=True)), "-trace_err", "-trace_msg", "-s", user]  # fmt: skip
    return [*cmd, target] if target else cmd


def check_sipp(scenario: str, workdir: Path, returncode: int | None, output: str) -> None:
    """Fails the test with SIPp's own logs unless SIPp reports its call as successful."""
    if returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(workdir.glob(f"{scenario}_*.log")))
        pytest.fail(f"sipp {scenario} exited {returncode}\n{output[-3000:]}{logs}")


def run_sipp(
    scenario: str, port: int, workdir: Path, user: str = "service", *, subst: dict[str, str] | None = None
) -> None:
    """One SIPp call (UAC) of ``scenario`` to Parley's SIP port; SIPp must report success."""
    cmd = sipp_command(scenario, workdir, f"127.0.0.1:{port}", user, subst=subst)
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=90)
    check_sipp(scenario, workdir, result.returncode, result.stdout + result.stderr)


def write_ulaw_wav(path: Path, pcm8k: np.ndarray) -> None:
    """A WAV of G.711 u-law at 8 kHz (format 7): SIPp's rtp_stream sends the data chunk's bytes as they are."""
    data = pcm16_to_ulaw(pcm8k.astype("<i2").tobytes())
    fmt = struct.pack("<HHIIHHH", 7, 1, 8000, 8000, 1, 8, 0)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
