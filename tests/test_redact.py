"""Redaction of log text and the JSON text checks, as pure functions (issue 8, findings 2 and 3).

Against a real server: tests/test_security_errors.py.
"""

from __future__ import annotations

import time

import pytest

from parley.api.errors import lone_surrogate_at, non_finite_number_at, nul_escape_at
from parley.redact import MASK, redact_text

# --- finding 3: what redaction masks (pure functions) -------------------------------------------------------------

KEY = "pk_" + "A1b2C3d4E5" * 4 + "xyz"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    "text,secret",
    [
        (f"Authorization: Bearer {KEY}", KEY),
        ("authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        (f"[(b'x-api-key', b'{KEY}'), (b'host', b'x')]", KEY),
        ("(b'x-twilio-signature', b'q1w2e3r4t5y6u7i8o9p0=')", "q1w2e3r4t5y6u7i8o9p0="),
        ("GET /telephony/exotel/status?call=x&token=s3cr3t-value&other=1", "s3cr3t-value"),
        ("/stream?key=abcdef123456&sig=zzzzzzzz", "abcdef123456"),
        ("/stream?key=abcdef123456&signature=zzzzzzzz", "zzzzzzzz"),
        ('{"api_key": "sk-live-1234567890", "name": "ok"}', "sk-live-1234567890"),
        ("{'password': 'two words here'}", "two words here"),
        (f"a bare key {KEY} in a sentence", KEY),
        (f"a talk token {JWT}.", JWT),
        ("postgresql+asyncpg://parley:db-password-1@db:5432/parley", "db-password-1"),
        ("X-Plivo-Signature-V3: abc123def456", "abc123def456"),
    ],
)
def test_redaction_masks_each_shape_of_credential(text: str, secret: str) -> None:
    masked = redact_text(text)
    assert secret not in masked and MASK in masked, masked
    assert redact_text(masked) == masked  # idempotent


def test_redaction_keeps_what_is_not_secret() -> None:
    text = "call_ended call_id=5d1c reason=caller-hangup duration_s=12.5 path=/v1/calls"
    assert redact_text(text) == text
    assert redact_text(KEY).startswith(KEY[:12])  # the prefix the API lists keys by


@pytest.mark.parametrize("unit", ["eyJ", "pk_", "x-", "a://", "b'", "Bearer ", "key=", "\\", "token: "])
def test_redaction_is_linear_on_hostile_text(unit: str) -> None:
    def best_of_3(text: str) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            redact_text(text)
            times.append(time.perf_counter() - t)
        return min(times)

    t_small = best_of_3(unit * (2_000 // len(unit)))
    t_large = best_of_3(unit * (128_000 // len(unit)))
    assert t_large < max(0.25, 64 * 4 * t_small), (unit, t_small, t_large)  # 64x the text: not 4000x the time


def test_nul_escapes_are_found() -> None:
    assert nul_escape_at('"a\\u0000"') == 2 and nul_escape_at('"a\\\\u0000"') is None


@pytest.mark.parametrize(
    "text,at",
    [
        ('"\\ud800"', 1),
        ('"\\ud83d\\ude00"', None),
        ('"\\\\ud800"', None),
        ('"\\\\\\ud800"', 3),
        ('"\\udc00"', 1),
        ('"\\ud83d\\ud83d\\ude00"', 1),
        ('"\\ud83d"', 1),
        ('"\\u0041\\ud83d\\ude00\\u00e9"', None),
    ],
)
def test_lone_surrogate_escapes_are_found(text: str, at: int | None) -> None:
    assert lone_surrogate_at(text) == at


@pytest.mark.parametrize(
    "text,found",
    [
        ('{"a": NaN}', True),
        ('{"a": -Infinity}', True),
        ('{"a": 1e999}', True),
        ('{"a": 1e308, "b": "NaN", "c": "Infinity 1e999"}', False),
        ('{"a": 1' + "0" * 400 + "}", False),  # an integer: exact, and bounded by the schema
        ('{"a": 1' + "0" * 400 + ".5}", True),
        ("[1, 2", False),  # not JSON at all: the app says so
    ],
)
def test_non_finite_numbers_are_found(text: str, found: bool) -> None:
    assert (non_finite_number_at(text) is not None) == found
