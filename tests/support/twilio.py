"""Twilio's side of a webhook: signed form posts, the voice webhook's fields, the TwiML's stream, the stream URL.

Signatures are computed by the twilio SDK (``RequestValidator``) over the public URL, as Twilio's cloud does.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from typing import Any

from twilio.request_validator import RequestValidator

from .service import Service

SID, TOKEN = "AC" + "1" * 32, "test-auth-token-0123456789"
PUBLIC = "https://parley.example.com"  # as carriers see it (behind nginx/a tunnel)


def signed_post(service: Service, path: str, form: dict[str, str], token: str = TOKEN) -> Any:
    """POST as Twilio does: form-encoded, X-Twilio-Signature over the public URL + params (the SDK computes it)."""
    signature = RequestValidator(token).compute_signature(PUBLIC + path, form)
    with service.client() as c:
        return c.post(path, data=form, headers={"X-Twilio-Signature": signature})


def voice_form(to: str = "+15550100200", sid: str | None = None) -> dict[str, str]:
    """Twilio's voice webhook fields; each call has its own CallSid (Parley answers one only once)."""
    sid = sid or "CA" + secrets.token_hex(16)
    return {"CallSid": sid, "AccountSid": SID, "From": "+15550109999", "To": to, "Direction": "inbound",
            "CallStatus": "ringing"}  # fmt: skip


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def stream_url(service: Service) -> tuple[str, dict[str, str]]:
    """Where a stream really connects (nginx would forward wss://parley.example.com here), signed like Twilio."""
    signature = RequestValidator(TOKEN).compute_signature("wss://parley.example.com/telephony/twilio/stream", {})
    return service.url.replace("http", "ws") + "/telephony/twilio/stream", {"X-Twilio-Signature": signature}
