"""OpenTelemetry traces: a real `parley serve` exporting OTLP/HTTP protobuf to a collector stand-in (an HTTP server
here that decodes each ExportTraceServiceRequest): one trace per call, a span per turn, one per turn stage, whose
durations are the call record's own turn timings."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog

from parley import tracing
from parley.calls.synthetic_caller import speak

from .support.service import Service, running_service
from .test_api_talk import RECEPTIONIST, stream_call

EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
HAVE_OTEL = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
needs_otel = pytest.mark.skipif(not HAVE_OTEL, reason="the otel extra is not installed (pip install 'parley[otel]')")


@dataclass
class Span:
    name: str
    trace_id: bytes
    span_id: bytes
    parent: bytes
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    resource: dict[str, Any]

    @property
    def secs(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Collector:
    """OTLP/HTTP's trace endpoint, as a collector answers it: POST /v1/traces, protobuf in, protobuf out."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                collector.add(self.path, request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, request: Any) -> None:
        found = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _value(a.value) for a in s.attributes}
                    found.append(Span(s.name, s.trace_id, s.span_id, s.parent_span_id, s.start_time_unix_nano,
                                      s.end_time_unix_nano, attrs, resource))  # fmt: skip
        with self.lock:
            self.paths.append(path)
            self.spans += found

    def of_call(self, call_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.attrs.get("parley.call_id") == call_id]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()


@needs_otel
def test_a_talk_call_is_one_trace_with_a_span_per_stage(collector: Collector, tmp_path: Path) -> None:
    env = {"PARLEY_OTEL_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200", "PARLEY_WORKER_ID": "w-otel"}
    with running_service(tmp_path / "otel", **env) as service:
        call_id, turns = _one_call(service)
        deadline = time.monotonic() + 60
        while not any(s.name == "call" for s in collector.of_call(call_id)):
            assert time.monotonic() < deadline, f"no call span arrived: {len(collector.spans)} spans"
            time.sleep(0.2)
        spans = collector.of_call(call_id)
    assert set(collector.paths) == {"/v1/traces"}
    assert len({s.trace_id for s in spans}) == 1  # one trace per call, and only this call's spans in it
    assert all(s.trace_id != spans[0].trace_id for s in collector.spans if s not in spans)
    (call,) = [s for s in spans if s.name == "call"]
    assert call.parent == b"" and call.attrs["parley.end_reason"] == "caller-hangup"
    assert call.resource["service.name"] == "parley" and call.resource["service.instance.id"] == "w-otel"
    by_turn = {s.attrs["parley.turn"]: s for s in spans if s.name == "turn"}
    assert sorted(by_turn) == [t["turn"] for t in turns] == [0, 1]
    for record in turns:
        turn = by_turn[record["turn"]]
        assert turn.parent == call.span_id
        assert turn.attrs["parley.transport"] == "talk" and turn.attrs["parley.agent"] == RECEPTIONIST["name"]
        stages = {s.name: s for s in spans if s.parent == turn.span_id}
        assert all(s.attrs["parley.turn"] == record["turn"] for s in stages.values())
        expected = {n: (a, b) for n, (a, b) in tracing.STAGE_SPANS.items() if {a, b} <= record["times"].keys()}
        assert set(stages) - {"vad_lag"} == set(expected), (sorted(stages), record["times"])
        for name, (a, b) in expected.items():  # rounded to the ms in the record; a stage that overlapped is 0
            took = max(0.0, record["times"][b] - record["times"][a])  # (streaming STT starts inside the speech)
            assert stages[name].secs == pytest.approx(took, abs=0.0021), (name, record["times"])
        assert all(call.start_ns <= s.start_ns and s.end_ns <= call.end_ns for s in stages.values())
    caller_stages = {s.name for s in spans if s.parent == by_turn[1].span_id}
    assert {"vad_lag", "end_of_turn", "stt", "llm_first_token", "tts_first_audio", "playout"} <= caller_stages


def _one_call(service: Service) -> tuple[str, list[dict[str, Any]]]:
    """A talk call with one question (as tests/test_api_talk.py); its id and the record's turns."""
    key = service.create_key("tracers")
    with service.client(key) as c:
        agent = c.post("/v1/agents", json=RECEPTIONIST).json()
        token = c.post(f"/v1/agents/{agent['id']}/talk-token").json()
    question = asyncio.run(speak("What are your opening hours on Saturday?", "joe-quick"))
    pcm = np.concatenate([np.zeros(16000 * 3, np.int16), question, np.zeros(16000 * 8, np.int16)])
    events, _ = asyncio.run(stream_call(service.url.replace("http", "ws") + token["url"], pcm))
    call_id = events[0]["call_id"]
    with service.client(key) as c:
        deadline = time.monotonic() + 60
        while (call := c.get(f"/v1/calls/{call_id}").json())["status"] != "ended":
            assert time.monotonic() < deadline, call["status"]
            time.sleep(0.2)
    return call_id, call["turns"]


def test_the_endpoint_settings() -> None:
    assert tracing.endpoint(None, {}) is None
    assert tracing.endpoint("http://c:4318/", {}) == "http://c:4318/v1/traces"
    assert tracing.endpoint("http://c:4318/v1/traces", {}) == "http://c:4318/v1/traces"
    assert tracing.endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == ""  # the exporter reads it
    assert tracing.endpoint(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": " "}) is None


def test_without_the_extra_an_endpoint_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_warned", False)
    monkeypatch.setitem(sys.modules, EXPORTER, None)  # its import fails as if not installed
    with structlog.testing.capture_logs() as logs:
        assert tracing.start_tracing("w", "http://127.0.0.1:9/", {}) is False
        assert tracing.start_tracing("w", "http://127.0.0.1:9/", {}) is False
    assert [e["event"] for e in logs] == ["tracing_unavailable"] and "parley[otel]" in logs[0]["why"]
    with structlog.testing.capture_logs() as logs:
        assert tracing.start_tracing("w", None, {}) is False  # no endpoint: nothing at all
    assert logs == []
