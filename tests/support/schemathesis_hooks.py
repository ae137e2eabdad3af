"""Schemathesis for tests/test_security_fuzz.py: the spec's hidden inputs, and hooks (loaded by SCHEMATHESIS_HOOKS).

``with_webhook_inputs``: the OpenAPI plus what the carrier webhooks read without declaring
it (signature headers, Parley's own query parameters, form and JSON bodies).

``no_server_error``: any 5xx fails, except the 502 that ``POST /v1/calls`` answers when
the carrier cannot be reached (the test points every carrier's API at a closed port:
that 502 is the carrier's failure reported, not Parley's).

``before_call`` (with ``FUZZ_SIGN=1``): signs each fuzzed carrier webhook as the carrier
would. Without a valid signature every fuzzed webhook stops at the signature check;
signed, the fuzzed fields (numbers, call ids, statuses, durations, ``?agent=``) reach
the code behind it. The secrets come from the environment the test gives schemathesis
(``FUZZ_TWILIO_TOKEN``, ``FUZZ_PLIVO_TOKEN``, ``FUZZ_VONAGE_SECRET``). Requests whose
form cannot be signed (a body that is not an object) go out as generated.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import requests
import schemathesis
from twilio.request_validator import RequestValidator


def _prepared(case: Any) -> requests.PreparedRequest:
    kwargs = case.as_transport_kwargs(base_url=os.environ["FUZZ_BASE_URL"])
    kwargs.pop("timeout", None)
    kwargs.pop("verify", None)
    kwargs.pop("allow_redirects", None)
    return requests.Request(**{k: v for k, v in kwargs.items() if k in _REQUEST_ARGS}).prepare()


_REQUEST_ARGS = {"method", "url", "headers", "files", "data", "params", "auth", "cookies", "json"}


def _form(request: requests.PreparedRequest) -> dict[str, str] | None:
    body = request.body or b""
    text = body.decode("utf-8", "surrogateescape") if isinstance(body, bytes) else str(body)
    if "application/x-www-form-urlencoded" not in (request.headers.get("Content-Type") or "") and text:
        return None
    return dict(parse_qsl(text, keep_blank_values=True))


def _plivo_v3(token: str, method: str, url: str, params: dict[str, str], nonce: str) -> str:
    """X-Plivo-Signature-V3 as Plivo documents it (the same construction as parley.telephony.plivo)."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        query = sorted(query + list(params.items()))
        text = base + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    else:
        text = base + ("?" + "&".join(f"{k}={v}" for k, v in query) if query or params else "")
        text += ("." if query and params else "") + "".join(f"{k}{v}" for k, v in sorted(params.items()))
    digest = hmac.new(token.encode(), f"{text}.{nonce}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _vonage_jwt(secret: str, request: requests.PreparedRequest) -> str:
    merged: dict[str, Any] = dict(parse_qsl(urlsplit(request.url or "").query, keep_blank_values=True))
    body = request.body or b""
    raw = body if isinstance(body, bytes) else str(body).encode()
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            merged.update(data)
    text = json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    claims = {"iat": int(time.time()), "jti": secrets.token_hex(8), "payload_hash": hashlib.sha256(text).hexdigest()}
    return jwt.encode(claims, secret, algorithm="HS256")


# --- the spec and the report, for the test ------------------------------------------------------------

Activity = list[tuple[float, float, str]]  # (wall clock from, to, what the fuzzer was sending)

# What each carrier's webhooks read besides their (undeclared) path: the fuzzer must send these too.
WEBHOOK_INPUTS: dict[str, dict[str, list[str]]] = {
    "twilio": {"header": ["X-Twilio-Signature"], "query": ["agent", "tenant", "call"],
               "form": ["To", "From", "Called", "Caller", "CallSid", "CallStatus", "CallDuration"]},
    "vonage": {"header": ["Authorization"], "query": ["agent", "tenant", "call", "from", "to", "uuid", "status"],
               "json": ["from", "to", "uuid", "status", "duration", "agent", "tenant", "call"]},
    "plivo": {"header": ["X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"],
              "query": ["agent", "tenant", "call", "to", "From", "To", "CallUUID", "CallStatus", "Event"],
              "form": ["From", "To", "CallUUID", "CallStatus", "Event", "HangupCause", "Duration", "to"]},
    "exotel": {"header": [], "query": ["call", "token", "status", "CallSid", "callsid"],
               "json": ["call", "token", "status", "CallSid", "CallStatus", "ConversationDuration"],
               "form": ["call", "token", "status", "CallSid", "CallStatus"]},
}  # fmt: skip


def with_webhook_inputs(spec: dict[str, Any], agent_id: str = "") -> dict[str, Any]:
    """The OpenAPI plus the headers, query parameters and bodies the /telephony/ webhooks read (``agent`` with an
    example that names a real agent, so that some answers get as far as a stream)."""
    spec = copy.deepcopy(spec)
    for path, methods in spec["paths"].items():
        provider = path.split("/")[2] if path.startswith("/telephony/") else ""
        inputs = WEBHOOK_INPUTS.get(provider)
        if inputs is None:
            continue
        for method, op in methods.items():
            params = op.setdefault("parameters", [])
            for where in ("header", "query"):
                params += [{"name": n, "in": where, "required": False, "schema": {"type": "string"}}
                           for n in inputs[where]]  # fmt: skip
            for param in params:
                if param["name"] == "agent" and agent_id:
                    param["example"] = agent_id
            if method == "post":
                content = {}
                for kind, media in (("form", "application/x-www-form-urlencoded"), ("json", "application/json")):
                    if kind in inputs:
                        props = {n: {"type": "string"} for n in inputs[kind]}
                        content[media] = {"schema": {"type": "object", "properties": props}}
                op["requestBody"] = {"required": False, "content": content}
    return spec


def har_activity(path: Path) -> Activity:
    """Each request of a HAR file as (sent, answered, "METHOD url → status"); the file is removed (it holds the
    fuzzer's API key: no secret is left lying in a test's files)."""
    from datetime import datetime

    if not path.exists():
        return []
    entries = json.loads(path.read_text())["log"]["entries"]
    path.unlink()
    out: Activity = []
    for e in entries:
        sent = datetime.fromisoformat(e["startedDateTime"]).timestamp()
        req = e["request"]
        label = f"{req['method']} {req['url'][:300]} → {e['response']['status']} in {e['time']:.0f} ms"
        out.append((sent, sent + e["time"] / 1000, label))
    print(f"  {len(out)} requests")
    return out


# --- hooks ------------------------------------------------------------------------------------------


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    status = response.status_code
    upstream = status == 502 and case.operation.method.upper() == "POST" and case.operation.path == "/v1/calls"
    if status >= 500 and not upstream:
        raise AssertionError(f"Server error: {status} {response.text[:300]!r}")
    return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if os.environ.get("FUZZ_SIGN") != "1":
        return
    path = case.operation.path
    provider = path.split("/")[2] if path.startswith("/telephony/") else ""
    if provider not in ("twilio", "plivo", "vonage"):
        return
    try:
        request = _prepared(case)
    except Exception:
        return  # what requests cannot send as it is, the server never sees signed either
    headers = dict(case.headers or {})
    url = request.url or ""
    if provider == "twilio":
        form = _form(request)
        if form is None:
            return
        validator = RequestValidator(os.environ["FUZZ_TWILIO_TOKEN"])
        headers["X-Twilio-Signature"] = validator.compute_signature(url, form)
    elif provider == "plivo":
        form = _form(request) if request.method == "POST" else {}
        if form is None:
            return
        nonce = secrets.token_hex(10)
        headers["X-Plivo-Signature-V3-Nonce"] = nonce
        headers["X-Plivo-Signature-V3"] = _plivo_v3(os.environ["FUZZ_PLIVO_TOKEN"], request.method or "", url, form,
                                                    nonce)  # fmt: skip
    else:
        headers["Authorization"] = f"Bearer {_vonage_jwt(os.environ['FUZZ_VONAGE_SECRET'], request)}"
    case.headers = headers
