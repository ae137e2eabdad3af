"""Hostile values in every field of every HTTP operation, one field at a time (used by tests/test_security_fuzz.py).

Schemathesis explores shapes; it seldom sends what broke this service before: a lone
surrogate (its text strategies leave them out), a NUL, thousands of digits, a date
without a zone, a non-ASCII signature header. This pass walks the OpenAPI (with the
webhooks' hidden inputs added) and sends each such value in each path parameter,
query parameter, header and top-level body field, and a few raw bodies (not UTF-8,
nested 100,000 deep) to each operation that takes one. Each answer must come within
the time limit and not be a 5xx (but the unreachable carrier's 502 from
``POST /v1/calls``: see tests/support/schemathesis_hooks.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

HOSTILE: dict[str, str] = {
    "a lone surrogate": "\ud800",
    "a NUL": "a\x00b",
    "non-ASCII": "é",
    "control characters": "\x01\x1b[2J\r\n",
    "5,000 digits": "9" * 5000,
    "10,000 characters": "a" * 10_000,
    "a date without a zone": "2024-01-01",
    "a negative number": "-1",
    "1e999": "1e999",
    "a byte range of 4,400 digits": "bytes=" + "9" * 4400 + "-",
}
RAW_BODIES: dict[str, bytes] = {
    "a body that is not UTF-8": b'{"name": "\xff\xfe"}',
    "a body nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "a body with a lone surrogate": b'{"name": "\\ud800", "number": "\\udfff", "to": "\\ud800"}',
    "a body with a 5,000-digit number": b'{"name": ' + b"9" * 5000 + b"}",
    "an empty body": b"",
    "a body that is null": b"null",
}


BENIGN = {"range": b"bytes=0-1", "x-plivo-signature-v3-nonce": b"12345678901234567890"}


@dataclass
class Probe:
    what: str
    method: str
    url: str  # path and query
    headers: dict[str, bytes]
    body: bytes | None


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _enc(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def probes(spec: dict[str, Any], ids: dict[str, str], bodies: dict[tuple[str, str], dict[str, Any]]) -> Iterator[Probe]:
    """Every (operation, field, hostile value), and the raw bodies; ``ids`` fill path parameters (real ids reach
    further), ``bodies`` are valid bodies to spoil one field at a time."""
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            params = [p for p in op.get("parameters", []) if p["name"].lower() not in ("authorization", "x-api-key")]
            base = {p["name"]: ids.get(p["name"], "x") for p in params if p["in"] == "path"}
            # every header the operation reads, with a harmless value: a check may look at one only when another is set
            headers = {p["name"]: BENIGN.get(p["name"].lower(), b"1") for p in params if p["in"] == "header"}
            # and, for the webhooks (whose query parameters are all optional text), every query parameter too
            queries = {p["name"]: "1" for p in params if p["in"] == "query"} if path.startswith("/telephony/") else {}
            content = op.get("requestBody", {}).get("content", {})
            body = bodies.get((method, path), {}) if "application/json" in content else None
            for what, value in HOSTILE.items():
                for p in params:
                    path_args = {**base, p["name"]: value} if p["in"] == "path" else base
                    url = path.format(**{k: _enc(v) for k, v in path_args.items()})
                    query_args = {**queries, p["name"]: value} if p["in"] == "query" else queries
                    query = "?" + "&".join(f"{_enc(k)}={_enc(v)}" for k, v in query_args.items()) if query_args else ""
                    header = dict(headers)
                    if p["in"] == "header":
                        header[p["name"]] = value.encode("utf-8", "surrogatepass")
                        if b"\x00" in header[p["name"]] or b"\r" in header[p["name"]]:
                            continue  # not a header anyone can send
                    data = json.dumps(body).encode() if body is not None else None
                    yield Probe(f"{p['name']} ({p['in']}) = {what}", method.upper(), url + query, header, data)
                if body is not None:
                    url = path.format(**base)
                    schema = _resolve(spec, content["application/json"]["schema"])
                    for field in sorted(set(schema.get("properties", {})) | set(body)):
                        spoiled = json.dumps({**body, field: value}).encode()
                        yield Probe(f"body {field} = {what}", method.upper(), url, headers, spoiled)
            if content:
                for what, raw in RAW_BODIES.items():
                    yield Probe(what, method.upper(), path.format(**base), headers, raw)


@dataclass
class Result:
    findings: list[str]
    activity: list[tuple[float, float, str]]
    sent: int


def send_all(base_url: str, key: str, all_probes: Iterator[Probe], limit_s: float, budget_s: float = 200) -> Result:
    """Send each probe (authenticated with ``key``); a 5xx, an answer slower than ``limit_s`` or no answer at all is
    a finding, with the request that caused it. Past ``budget_s`` the rest is not sent (a finding too), so that a
    slow server still gets its findings reported within pytest's timeout."""
    result = Result([], [], 0)
    deadline = time.monotonic() + budget_s
    with httpx.Client(base_url=base_url, timeout=max(10.0, limit_s * 10)) as client:
        for p in all_probes:
            if time.monotonic() > deadline:
                result.findings.append(f"stopped after {result.sent} requests: {budget_s:.0f} s were spent")
                break
            headers: dict[str, Any] = {"Authorization": f"Bearer {key}", **p.headers}
            if p.body is not None:
                headers["Content-Type"] = "application/json"
            wall, sent = time.time(), time.monotonic()
            try:
                try:
                    r = client.request(p.method, p.url, headers=headers, content=p.body)
                except httpx.TransportError:  # the server may close a kept-alive connection after an error: retry
                    r = client.request(p.method, p.url, headers=headers, content=p.body)
                status, problem = r.status_code, ""
            except httpx.HTTPError as exc:
                status, problem = 0, f"no answer ({type(exc).__name__}: {str(exc)[:100]})"
            took = time.monotonic() - sent
            result.sent += 1
            label = f"{p.method} {p.url[:200]} [{p.what}] → {status} in {took * 1000:.0f} ms"
            result.activity.append((wall, wall + took, label))
            upstream = status == 502 and p.method == "POST" and p.url.startswith("/v1/calls")
            if status >= 500 and not upstream:
                problem = f"{status} {r.text[:120]!r}"
            elif took > limit_s:
                problem = problem or f"answered after {took:.2f} s"
            if problem:
                body = "" if p.body is None else f" body={p.body[:160]!r}"
                sent_headers = f" headers={str(p.headers)[:120]}" if p.headers else ""
                result.findings.append(f"{p.method} {p.url[:300]} [{p.what}]{body}{sent_headers}: {problem}")
    return result
