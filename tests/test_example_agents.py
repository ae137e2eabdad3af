"""The example agents' own test files pass, as a newcomer runs them: ``parley test`` in a subprocess, with the
embedded models, and for the clinic its example booking server (a real HTTP server checking the HMAC signature)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "clinic"))
import booking_server  # noqa: E402

from .support.tool_server import serve_app  # noqa: E402

SECRET = "clinic-example-secret"
CLINIC_PORT = 8089  # examples/agents/clinic.yaml books at this port


@pytest.fixture
def booking() -> Iterator[booking_server.Clinic]:
    app = booking_server.app(SECRET)
    for _ in serve_app(app, CLINIC_PORT):
        yield app.state.clinic


def _parley_test(tests: str, out: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", "test", str(ROOT / tests), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
        cwd=ROOT,
    )


def test_the_clinic_books_over_a_simulated_call(booking: booking_server.Clinic, tmp_path: Path) -> None:
    done = _parley_test(
        "examples/agents/clinic.tests.yaml",
        tmp_path / "clinic.json",
        CLINIC_TOOL_SECRET=SECRET,
        PARLEY_PROVIDER_ENV_ALLOW="CLINIC_TOOL_SECRET",
        PARLEY_OUTBOUND_ALLOW="127.0.0.1",
    )
    report = json.loads((tmp_path / "clinic.json").read_text())
    assert done.returncode == 0, json.dumps(report, indent=1)[:4000]
    booked = sorted(b["day"] for b in booking.bookings.values())
    assert booked == ["Tuesday", "Wednesday"]  # one per booking scenario, signed and accepted by the server
    by_day = {b["day"]: b for b in booking.bookings.values()}
    assert by_day["Tuesday"]["caller"] == "+15550100"  # the text scenario's seeded caller, through the template


def test_the_clinic_cannot_book_without_the_signing_secret(booking: booking_server.Clinic, tmp_path: Path) -> None:
    """A wrong secret: the server refuses (401), the agent says it could not, and the test file fails."""
    done = _parley_test(
        "examples/agents/clinic.tests.yaml",
        tmp_path / "clinic.json",
        CLINIC_TOOL_SECRET="not-the-secret",
        PARLEY_PROVIDER_ENV_ALLOW="CLINIC_TOOL_SECRET",
        PARLEY_OUTBOUND_ALLOW="127.0.0.1",
    )
    assert done.returncode == 1
    assert booking.bookings == {}
    report = json.loads((tmp_path / "clinic.json").read_text())
    text = json.dumps(report)
    assert "http-status" in text and "couldn't check that" in text


def test_the_receptionist_test_file_passes(tmp_path: Path) -> None:
    done = _parley_test("examples/agents/receptionist.tests.yaml", tmp_path / "receptionist.json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
