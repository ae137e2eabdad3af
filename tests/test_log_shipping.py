"""Log shipping (deploy/logging/): Parley's JSON lines into Elasticsearch.

Fluent Bit is the shipped configuration for Compose and Kubernetes, checked with ``fluent-bit --dry-run`` where the
binary is installed (Debian 12, PyPI and npm carry none: the check is skipped here, the file's structure is still
checked). rsyslog (Debian's, with rsyslog-elasticsearch) ships the same documents from a bare host and runs here for
real: it tails a log file that parley.logs wrote and posts to an Elasticsearch ``_bulk`` stand-in in this test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .support.service import ROOT

LOGGING = ROOT / "deploy" / "logging"
RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """A Fluent Bit classic config: ``[SECTION]`` headers, ``Key Value`` lines, comments."""
    found: list[tuple[str, dict[str, str]]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            found.append((line.strip("[]"), {}))
        else:
            key, _, value = line.partition(" ")
            found[-1][1][key.lower()] = value.strip()
    return found


def test_index_template_maps_the_fields_operators_search() -> None:
    template = json.loads((LOGGING / "index-template.json").read_text())
    props = template["template"]["mappings"]["properties"]
    for field in ("call_id", "tenant", "worker", "level", "event"):
        assert props[field]["type"] == "keyword", field
    assert props["timestamp"]["type"] == "date" and props["@timestamp"]["type"] == "date"
    assert template["index_patterns"] == ["parley-logs-*"]


def test_fluent_bit_config_parses_json_and_writes_the_templated_indices() -> None:
    conf = sections(LOGGING / "fluent-bit.conf")
    (service,) = [kv for name, kv in conf if name == "SERVICE"]
    assert (LOGGING / service["parsers_file"]).exists()
    parsers = {kv["name"]: kv for name, kv in sections(LOGGING / service["parsers_file"]) if name == "PARSER"}
    assert parsers["parley_json"]["format"] == "json" and parsers["parley_json"]["time_key"] == "timestamp"
    inputs = {kv["name"]: kv for name, kv in conf if name == "INPUT"}
    assert set(inputs) == {"forward", "tail", "systemd"} and inputs["tail"]["parser"] == "parley_json"
    assert {kv["parser"] for name, kv in conf if name == "FILTER"} == {"parley_json"}
    (es,) = [kv for name, kv in conf if name == "OUTPUT"]
    assert es["name"] == "es" and es["match"] == "parley.*" and es["logstash_format"] == "On"
    assert f"{es['logstash_prefix']}-*" in json.loads((LOGGING / "index-template.json").read_text())["index_patterns"]


@pytest.mark.skipif(shutil.which("fluent-bit") is None, reason="fluent-bit is not installed (not in Debian 12)")
def test_fluent_bit_dry_run_accepts_the_config(tmp_path: Path) -> None:
    env = {**os.environ, "FLUENT_BIT_STATE": str(tmp_path), "PARLEY_LOG_FILES": str(tmp_path / "*.log"),
           "ELASTICSEARCH_HOST": "127.0.0.1", "ELASTICSEARCH_PORT": "9200", "ELASTICSEARCH_USER": "elastic",
           "ELASTICSEARCH_PASSWORD": "x"}  # fmt: skip
    out = subprocess.run(["fluent-bit", "--dry-run", "-c", str(LOGGING / "fluent-bit.conf")], env=env,
                         capture_output=True, text=True, timeout=60, cwd=LOGGING)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


class Bulk:
    """Elasticsearch's ``_bulk`` API as far as a shipper uses it: NDJSON action/document pairs in, per-item 201s out."""

    def __init__(self) -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        bulk = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer({"version": {"number": "8.15.0"}, "tagline": "You Know, for Search"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                items = []
                with bulk.lock:
                    for action, doc in zip(lines[::2], lines[1::2], strict=True):
                        index = action.get("index") or action.get("create") or {}
                        bulk.docs.append((index.get("_index", ""), doc))
                        items.append({"index": {"_index": index.get("_index"), "status": 201, "result": "created"}})
                self._answer({"took": 1, "errors": False, "items": items})

            def _answer(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]


@pytest.fixture
def bulk() -> Iterator[Bulk]:
    b = Bulk()
    threading.Thread(target=b.server.serve_forever, daemon=True).start()
    yield b
    b.server.shutdown()
    b.server.server_close()


needs_rsyslog = pytest.mark.skipif(
    not Path(RSYSLOGD).exists() or subprocess.run(["dpkg", "-s", "rsyslog-elasticsearch"], capture_output=True)
    .returncode != 0, reason="rsyslog-elasticsearch is not installed (scripts/install-test-deps.sh)",
)  # fmt: skip


def rsyslog_env(state: Path, files: str, port: int) -> dict[str, str]:
    return {**os.environ, "RSYSLOG_STATE": str(state), "PARLEY_LOG_FILES": files,
            "ELASTICSEARCH_HOST": "127.0.0.1", "ELASTICSEARCH_PORT": str(port)}  # fmt: skip


@needs_rsyslog
def test_rsyslog_checks_the_config(tmp_path: Path) -> None:
    env = rsyslog_env(tmp_path, str(tmp_path / "*.log"), 9200)
    conf = LOGGING / "rsyslog-parley.conf"
    ok = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace('bulkmode="on"', 'bulkmode="on" no_such_parameter="1"'))
    bad = subprocess.run([RSYSLOGD, "-N1", "-f", str(broken)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0  # the check reads the parameters: it would catch a typo


WRITER = textwrap.dedent(
    """
    import sys, structlog
    from parley.logs import configure_logging, stop_logging
    configure_logging(fmt="json", stream=open(sys.argv[1], "a"))
    log = structlog.get_logger("parley.calls.live")
    for n in range(int(sys.argv[2])):
        with structlog.contextvars.bound_contextvars(call_id=f"call-{n}", tenant="acme", worker="w-1"):
            log.info("call_ended", reason="caller-hangup", duration=1.5)
    structlog.get_logger("parley.api").warning("no_call_here", note="a line without a call id")
    stop_logging()
    """
)


@needs_rsyslog
def test_rsyslog_ships_a_parley_json_log_to_elasticsearch_bulk(tmp_path: Path, bulk: Bulk) -> None:
    log_file = tmp_path / "parley.log"
    written = subprocess.run([sys.executable, "-c", WRITER, str(log_file), "20"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)  # fmt: skip
    assert written.returncode == 0, written.stderr
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(lines) == 21 and lines[0]["call_id"] == "call-0"
    state = tmp_path / "state"
    state.mkdir()
    env = rsyslog_env(state, str(log_file), bulk.port)
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(LOGGING / "rsyslog-parley.conf"), "-i", str(tmp_path / "pid")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(bulk.docs) < 21:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, f"{len(bulk.docs)} of 21 documents arrived"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    docs = {doc.get("call_id", ""): (index, doc) for index, doc in bulk.docs}
    assert set(docs) == {f"call-{n}" for n in range(20)} | {""}
    index, doc = docs["call-7"]
    assert doc["tenant"] == "acme" and doc["worker"] == "w-1" and doc["event"] == "call_ended"
    assert doc["level"] == "info" and doc["timestamp"] == lines[7]["timestamp"]
    assert index == "parley-logs-" + re.sub(r"^(\d{4})-(\d\d)-(\d\d).*", r"\1.\2.\3", doc["timestamp"])
