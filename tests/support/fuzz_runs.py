"""The HTTP fuzzers as one call each, for test_security_fuzz.py (embedded backend) and test_api_talk.py (PostgreSQL):
schemathesis over the service's own spec, and hostile values in every field of every operation.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .http_fuzz import Result, probes, send_all
from .live_call import short_call, talker
from .schemathesis_hooks import Activity, har_activity, with_webhook_inputs
from .service import ROOT, Service

SLOW_S = 1.0  # any answer (HTTP response, socket reply or close) slower than this under fuzzing is a finding
MAX_EXAMPLES = 20  # per operation and phase: ~60 operations, the whole module within ~3 minutes

HOOKS = {"SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks", "PYTHONPATH": str(ROOT)}  # its checks and signatures


def schemathesis(
    service: Service,
    tmp_path: Path,
    headers: dict[str, str],
    *extra: str,
    env: dict[str, str] | None = None,
    agent_id: str = "",
    phases: str = "examples,coverage,fuzzing",
) -> tuple[list[str], Activity]:
    """Run schemathesis over every operation: the failures it reports (a curl to reproduce each), and when it sent
    each request."""
    import httpx

    spec = with_webhook_inputs(httpx.get(f"{service.url}/openapi.json").json(), agent_id)
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    header_args = [a for name, value in headers.items() for a in ("--header", f"{name}: {value}")]
    if "Authorization" in headers:  # it finds the key's id in GET /v1/keys: revoked, the rest would be 401s
        header_args += ["--exclude-name", "DELETE /v1/keys/{key_id}"]
    start = time.monotonic()
    command = [sys.executable, "-m", "schemathesis.cli", "run", "openapi.json", "--url", service.url, *header_args,
         "--checks", "no_server_error", "--max-response-time", str(SLOW_S), "--max-examples", str(MAX_EXAMPLES),
         "--workers", "1", "--continue-on-failure", "--generation-database", "none", "--no-color",
         "--phases", phases, "--request-timeout", "30", "--output-truncate", "false",
         "--output-sanitize", "false",
         "--report", "har", "--report-har-path", "requests.har", *extra]  # fmt: skip
    try:  # within pytest's own timeout (300 s), so that what it found is still reported
        result = subprocess.run(command, capture_output=True, text=True, timeout=270, cwd=tmp_path,
                                env={**os.environ, **HOOKS, **(env or {})})  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
        return [f"schemathesis did not finish within 270 s (the server is that slow):\n{out[-6000:]}"], []
    print(f"schemathesis {' '.join(headers)} {' '.join(extra)}: {time.monotonic() - start:.0f} s")
    activity = har_activity(tmp_path / "requests.har")
    if result.returncode == 0:
        return [], activity
    return [_failures_section(result.stdout) or result.stdout[-6000:] + result.stderr[-2000:]], activity


def _failures_section(out: str) -> str:
    """The part of schemathesis' output that names each failure (its curl command included)."""
    start = out.find("FAILURES")
    end = out.find("SUMMARY", start)
    return out[start:end].strip()[:20000] if start >= 0 else ""


def hostile_values(service: Service, key: str) -> Result:
    """tests/support/http_fuzz.py against real resources of ``key``'s tenant: an agent, and a call with a recording."""
    import httpx

    with service.client(key) as c:
        created = c.post("/v1/agents", json={**talker(1), "name": f"hostile-{time.monotonic_ns()}", "greeting": ""})
    assert created.status_code == 201, created.text
    agent_id = created.json()["id"]
    ws_url = service.url.replace("http", "ws", 1) + f"/v1/agents/{agent_id}/talk"
    call_id = asyncio.run(short_call(ws_url, {"Authorization": f"Bearer {key}"}))  # a recording for Range
    spec = with_webhook_inputs(httpx.get(f"{service.url}/openapi.json").json(), agent_id)
    ids = {"agent_ref": agent_id, "call_id": call_id, "version": "1", "number": "+15550001111", "name": "openai"}
    bodies = {
        ("post", "/v1/agents"): {**talker(1), "name": "hostile-2"},
        ("put", "/v1/agents/{agent_ref}"): {**talker(1), "name": "hostile"},
        ("post", "/v1/keys"): {"name": "k", "role": "viewer"},
        ("post", "/v1/numbers"): {"number": "+15550001111", "agent_id": agent_id},
        ("post", "/v1/calls"): {"agent_id": agent_id, "to": "+15550001111", "provider": "twilio"},
    }
    result = send_all(service.url, key, probes(spec, ids, bodies), SLOW_S)
    print(f"hostile values: {result.sent} requests")
    return result
