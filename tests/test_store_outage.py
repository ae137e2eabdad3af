"""A background loop's database outage is one warning and one line when it ends, not a traceback every tick;
a bug keeps its traceback every time."""

from __future__ import annotations

import structlog
from sqlalchemy.exc import OperationalError

from parley.store.outage import OutageLog, transient


def test_an_outage_is_logged_once_and_its_end_once() -> None:
    outage = OutageLog("some_loop")
    down = OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            outage.failed(down)
        outage.ok()
        outage.ok()
        outage.failed(ValueError("a bug"))
        outage.failed(ValueError("a bug"))
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("some_loop_db_unavailable", "warning"),
        ("some_loop_db_back", "info"),
        ("some_loop_failed", "error"),
        ("some_loop_failed", "error"),
    ]


def test_what_passes_with_time() -> None:
    assert transient(ConnectionResetError()) and transient(TimeoutError())
    assert transient(OperationalError("x", {}, OSError("gone")))
    assert not transient(ValueError("bad row")) and not transient(KeyError("k"))
