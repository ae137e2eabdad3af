"""Operations metrics end to end: a real `parley serve` holds a real talk call, then ``GET /metrics`` shows every
family with sane values and bounded labels; promtool checks the shipped Prometheus config and alert rules and runs
their unit tests; a real Prometheus (Debian's package) scrapes the running Parley; every PromQL expression of the
Grafana dashboard and the alert rules names only metrics Parley exports, and the real Prometheus accepts it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parley.api.app import create_app
from parley.calls.synthetic_caller import speak
from parley.config import Settings
from parley.metrics import REGISTRY, configure, end_reason
from parley.metrics.calls import agent_label
from parley.metrics.registry import STATE
from parley.services.tts.base import registry as tts_registry

from .support.service import ROOT, Service, free_port, register_secret, running_service
from .test_api_talk import RECEPTIONIST, stream_call

DEPLOY = ROOT / "deploy"
PROMTOOL, PROMETHEUS = shutil.which("promtool"), shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(not (PROMTOOL and PROMETHEUS), reason="scripts/install-test-deps.sh: prometheus")
TOKEN = f"scrape-{secrets.token_hex(12)}"
register_secret(TOKEN)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {"PARLEY_METRICS_TOKEN": TOKEN, "PARLEY_METRICS_ALLOW": "192.0.2.0/24"}  # a range no test runs from
    with running_service(tmp_path_factory.mktemp("metrics-ops"), **env) as svc:
        yield svc


@pytest.fixture(scope="module")
def after_a_call(service: Service) -> dict[str, Any]:
    """A real talk call (WebSocket, synthesized speech at real time), then a scrape: what the tests read."""
    key = service.create_key("metrics-ops")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json=RECEPTIONIST).json()
        token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    question = asyncio.run(speak("What are your opening hours on Saturday?", "joe-quick"))
    pcm = np.concatenate([np.zeros(16000 * 4, np.int16), question, np.zeros(16000 * 8, np.int16)])
    events, _ = asyncio.run(stream_call(service.url.replace("http", "ws") + token["url"], pcm))
    assert events[-1]["type"] == "end"
    time.sleep(0.5)  # the call's end is counted as its record closes
    text = scrape(service)
    return {"text": text, "call_id": events[0]["call_id"], "agent_id": agent["id"], "key": key}


def scrape(service: Service, token: str | None = TOKEN) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{service.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.status_code
    return response.text


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(text) if n == name and labels.items() <= lab.items())


# --- a real call, then the scrape ------------------------------------------------------------------------------


def test_a_call_shows_in_every_family(after_a_call: dict[str, Any]) -> None:
    text = after_a_call["text"]
    assert value(text, "parley_calls_started_total", transport="talk") >= 1
    assert value(text, "parley_calls_ended_total", transport="talk", reason="caller-hangup") >= 1
    assert value(text, "parley_calls_active", transport="talk") == 0  # it ended
    assert value(text, "parley_call_duration_seconds_count", transport="talk") >= 1
    v2v_n = value(text, "parley_voice_to_voice_seconds_count", transport="talk")
    assert v2v_n >= 1
    assert 0.05 < value(text, "parley_voice_to_voice_seconds_sum", transport="talk") / v2v_n < 10
    for stage in ("vad_lag", "pause_detect", "stt", "llm_first_token", "tts_first_audio", "playout"):
        assert value(text, "parley_turn_stage_seconds_count", stage=stage) >= 1, stage
        assert value(text, "parley_turn_stage_seconds_sum", stage=stage) < 30, stage
    for stage, provider in (("stt", "whisper"), ("llm", "llama"), ("tts", "piper")):
        assert value(text, "parley_provider_requests_total", stage=stage, provider=provider, outcome="ok") >= 1
    for stage, provider in (("llm", "llama"), ("tts", "piper"), ("stt", "whisper")):
        assert value(text, "parley_provider_latency_seconds_count", stage=stage, provider=provider) >= 1
    frames = value(text, "parley_playout_speech_frames_total", transport="talk")
    assert frames > 50  # the greeting and an answer: seconds of 20 ms frames
    assert 0 <= value(text, "parley_playout_late_frames_total", transport="talk") <= frames
    assert value(text, "parley_playout_max_lateness_seconds_count", transport="talk") >= 1
    assert value(text, "parley_http_requests_total", route="/v1/agents", method="POST", status="201") >= 1
    assert value(text, "parley_event_loop_lag_seconds_count") > 0
    assert value(text, "parley_worker_calls_in_use") == 0
    assert value(text, "parley_worker_draining") == 0
    assert value(text, "parley_build_info") == 1


def test_no_ids_tenants_or_numbers_in_labels(after_a_call: dict[str, Any]) -> None:
    text = after_a_call["text"]
    for secret in (after_a_call["call_id"], after_a_call["agent_id"], "metrics-ops", TOKEN):
        assert secret not in text
    uuid_like = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
    assert not [lab for _, lab, _ in samples(text) if any(uuid_like.search(v) for v in lab.values())]


def test_many_paths_are_one_route_label(service: Service, after_a_call: dict[str, Any], tmp_path: Path) -> None:
    """A scanner's thousand distinct paths add a handful of series: route templates, or ``unmatched``."""
    before = {tuple(sorted(lab.items())) for n, lab, _ in samples(scrape(service)) if n == "parley_http_requests_total"}
    with httpx.Client(base_url=service.url, timeout=10) as c:
        for i in range(150):
            c.get(f"/v1/calls/{uuid.uuid4()}")  # one template, 401
            c.get(f"/no/such/{i}/{secrets.token_hex(4)}")  # unmatched, 404
            c.request("BREW", f"/coffee/{i}")  # an odd method: OTHER
    text = scrape(service)
    after = {tuple(sorted(lab.items())) for n, lab, _ in samples(text) if n == "parley_http_requests_total"}
    assert len(after - before) <= 6, sorted(after - before)
    routes = {lab["route"] for n, lab, _ in samples(text) if n == "parley_http_requests_total"}
    app = create_app(Settings(data_dir=tmp_path))
    templates = {getattr(r, "path_format", None) for r in app.routes} | set(app.openapi()["paths"])
    assert routes <= templates | {"unmatched"}, routes - templates
    assert value(text, "parley_http_requests_total", route="/v1/calls/{call_id}", status="401") >= 150
    assert value(text, "parley_http_requests_total", route="unmatched", method="other") >= 150
    assert "/no/such/" not in text and "coffee" not in text


def test_the_scrape_is_the_tokens_or_the_allow_lists(service: Service, tmp_path: Path) -> None:
    assert httpx.get(f"{service.url}/metrics").status_code == 401  # 127.0.0.1 is not in the allow list
    assert httpx.get(f"{service.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    listed = TestClient(create_app(Settings(data_dir=tmp_path, metrics_allow="10.0.0.0/8")), client=("10.1.2.3", 1))
    assert listed.get("/metrics").status_code == 200  # listed: no token needed
    unlisted = TestClient(create_app(Settings(data_dir=tmp_path, metrics_allow="10.0.0.0/8")), client=("11.0.0.1", 1))
    assert unlisted.get("/metrics").status_code == 403
    both = Settings(data_dir=tmp_path, metrics_allow="10.0.0.0/8", metrics_token="both-ways")
    outside = TestClient(create_app(both), client=("11.0.0.1", 1))
    assert outside.get("/metrics").status_code == 401
    assert outside.get("/metrics", headers={"Authorization": "Bearer both-ways"}).status_code == 200
    with pytest.raises(ValueError):
        Settings(metrics_allow="10.0.0.300/8")  # a typo fails at start-up


# --- in-process parts: refusals, switches, bounds ---------------------------------------------------------------


def test_rate_limit_refusals_are_counted_by_kind(tmp_path: Path) -> None:
    before = REGISTRY.get_sample_value("parley_rate_limited_total", {"scope": "addr"}) or 0.0
    app = create_app(Settings(data_dir=tmp_path, rate_limit_per_address="2/minute"))
    with TestClient(app) as client:
        statuses = [client.get("/v1/agents", headers={"Authorization": "Bearer x"}).status_code for _ in range(5)]
    assert statuses.count(429) == 3
    assert REGISTRY.get_sample_value("parley_rate_limited_total", {"scope": "addr"}) == before + 3


async def test_a_failed_recording_upload_is_counted(tmp_path: Path) -> None:
    """A real local blob store whose directory vanishes before the recording closes."""
    from parley.calls.recorder import BlobSink
    from parley.store.blobs.local import LocalBlobStore

    before = REGISTRY.get_sample_value("parley_recording_upload_failures_total", {"step": "close"}) or 0.0
    sink = BlobSink(await LocalBlobStore(tmp_path / "blobs").writer("t/c.wav"), 16000)
    await sink.write(bytes(640))
    shutil.rmtree(tmp_path / "blobs")
    with pytest.raises(OSError):
        await sink.close(640)
    assert REGISTRY.get_sample_value("parley_recording_upload_failures_total", {"step": "close"}) == before + 1


def test_with_metrics_off_the_media_path_is_untouched(tmp_path: Path) -> None:
    """PARLEY_METRICS_ENABLED=false: a provider's own generator, no HTTP middleware, still a (zero) scrape."""
    tone = tts_registry.create("tone", {})
    try:
        create_app(Settings(data_dir=tmp_path, metrics_enabled=False))
        assert not STATE.enabled
        assert qualname(tone.synthesize("Hi.")) == f"{type(tone).__name__}.synthesize"  # the provider's own
        on = create_app(Settings(data_dir=tmp_path))
        assert STATE.enabled
        assert qualname(tone.synthesize("Hi.")) == "_counted"  # counted and timed
        off = create_app(Settings(data_dir=tmp_path, metrics_enabled=False, metrics_token="t0ken-off"))
        assert "HttpMetricsMiddleware" not in {m.cls.__name__ for m in off.user_middleware}
        assert "HttpMetricsMiddleware" in {m.cls.__name__ for m in on.user_middleware}
    finally:
        configure(enabled=True)


def qualname(generator: object) -> str:
    return str(getattr(generator, "__qualname__", ""))


def test_end_reasons_and_agents_are_bounded() -> None:
    assert end_reason("caller-hangup") == "caller-hangup"
    assert end_reason("error: ValueError: +15551234567") == "error"
    assert end_reason("stream-closed by carrier") == "stream"
    assert end_reason("dial-failed: 486 busy here") == "dial-failed"
    assert end_reason("anything a carrier says") == "other"
    saved = STATE.agent_labels
    try:
        STATE.agent_labels = 0
        assert agent_label(f"never-seen-{uuid.uuid4()}") == "other"
        STATE.agent_labels = 10_000
        name = f"fresh-{uuid.uuid4().hex[:8]}"
        assert agent_label(name) == name and agent_label(name) == name
    finally:
        STATE.agent_labels = saved


# --- promtool, a real Prometheus, the dashboard ------------------------------------------------------------------


def prometheus_dir(tmp_path: Path) -> Path:
    """deploy/prometheus as shipped, beside the token file it reads (secrets/parley-metrics-token)."""
    where = tmp_path / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", where)
    (where / "secrets").mkdir(exist_ok=True)
    (where / "secrets" / "parley-metrics-token").write_text(TOKEN)
    return where


@needs_prometheus
def test_promtool_checks_the_config_and_the_rules_and_runs_their_tests(tmp_path: Path) -> None:
    where = prometheus_dir(tmp_path)
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):  # fmt: skip
        out = subprocess.run([str(PROMTOOL), *args], cwd=where, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    assert (
        "SUCCESS: 9 rules found"
        in subprocess.run(
            [str(PROMTOOL), "check", "rules", "alerts.yml"], cwd=where, capture_output=True, text=True, timeout=60
        ).stdout
    )


def exported_names() -> set[str]:
    """Every series name Parley's registry can export (a histogram's _bucket/_sum/_count, a counter's _total)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def dashboard_exprs() -> list[str]:
    board = json.loads((DEPLOY / "grafana/dashboards/parley.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in board["templating"]["list"]]
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_the_dashboard_and_alerts_name_only_exported_metrics() -> None:
    board = json.loads((DEPLOY / "grafana/dashboards/parley.json").read_text())
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 12 and all(p["datasource"]["uid"] == uid for p in panels)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in panels)
    for needed in ("active calls", "voice-to-voice", "stage latency", "errors by provider", "capacity per worker"):
        assert needed in titles, needed
    known = exported_names() | {"up"}
    for expr in dashboard_exprs() + alert_exprs():
        used = set(re.findall(r"\bparley_[a-z0-9_]+", expr)) | ({"up"} if re.search(r"\bup\{", expr) else set())
        assert used or expr.startswith("vector("), expr
        assert used <= known, (expr, used - known)
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/parley.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.fixture
def prometheus(service: Service, tmp_path: Path) -> Iterator[str]:
    """Debian's Prometheus on a free 127.0.0.1 port, its own data directory, scraping ``service`` every second
    with the shipped scrape settings (bearer token from a file, /metrics) and the shipped alert rules."""
    where = prometheus_dir(tmp_path)
    shipped = yaml.safe_load((where / "prometheus.yml").read_text())
    job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "parley")
    job["static_configs"] = [{"targets": [service.url.removeprefix("http://")], "labels": {"deployment": "test"}}]
    job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": shipped["rule_files"], "scrape_configs": [job]}  # fmt: skip
    (where / "test.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={where / 'test.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=where,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


@needs_prometheus
def test_a_real_prometheus_scrapes_the_running_parley(
    prometheus: str, service: Service, after_a_call: dict[str, Any]
) -> None:
    deadline, targets, found = time.monotonic() + 60, [], []
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
            if targets and targets[0]["health"] == "up":
                found = query(prometheus, 'parley_calls_started_total{transport="talk"}')
                if found:
                    break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    assert targets and targets[0]["health"] == "up", targets
    assert found and float(found[0]["value"][1]) >= 1, found
    assert float(query(prometheus, 'up{job="parley"}')[0]["value"][1]) == 1
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"ParleyVoiceToVoiceP95OverBudget", "ParleyWorkerDown", "ParleyNoCapacityLeft"} <= names
    assert all(r["health"] != "err" for g in rules for r in g["rules"]), rules
    for expr in dashboard_exprs():  # every panel's PromQL parses and evaluates in a real Prometheus
        if not expr.startswith("label_values"):
            query(prometheus, expr.replace("$instance", ".*"))
