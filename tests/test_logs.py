"""PARLEY_LOG_LEVEL and PARLEY_LOG_FORMAT: info events are written by default, json lines parse, bad values refuse."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from parley.logs import CHATTY_LOGGERS, configure_logging, stop_logging


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A stream the log writer thread writes to; read it after ``stop_logging()`` (which flushes the queue)."""
    monkeypatch.delenv("PARLEY_LOG_LEVEL", raising=False)
    monkeypatch.delenv("PARLEY_LOG_FORMAT", raising=False)
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)  # a test server's uvicorn.Config may have set it
    stream = io.StringIO()
    yield stream
    stop_logging()
    structlog.reset_defaults()
    logging.getLogger().setLevel(logging.WARNING)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def _emit() -> None:
    log = structlog.get_logger("parley.test")
    log.debug("a_debug_event")
    log.info("an_info_event", call_id="c1")
    logging.getLogger("uvicorn.error").info("a stdlib info line")
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")  # routine: debug only
    log.warning("a_warning_event")


def test_info_events_are_written_by_default(written: io.StringIO) -> None:
    configure_logging(stream=written)
    _emit()
    stop_logging()
    out = written.getvalue()
    assert "an_info_event" in out and "call_id=c1" in out and "a stdlib info line" in out and "a_warning_event" in out
    assert "a_debug_event" not in out and "Context impl" not in out


def test_json_lines_parse_and_the_level_comes_from_the_environment(
    written: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_LOG_FORMAT", "json")
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "WARNING")
    configure_logging(stream=written)
    _emit()
    stop_logging()
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [("a_warning_event", "warning")]
    assert lines[0]["logger"] == "parley.test" and "timestamp" in lines[0]


def test_debug_level_and_verbose_write_debug_events(written: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "debug")
    configure_logging(stream=written, fmt="json")
    _emit()
    stop_logging()
    events = [json.loads(line)["event"] for line in written.getvalue().splitlines()]
    assert "a_debug_event" in events and "Context impl SQLiteImpl." in events


def test_an_unknown_level_is_refused(written: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="PARLEY_LOG_LEVEL must be one of debug, info"):
        configure_logging(stream=written)


def test_the_command_refuses_an_unknown_level() -> None:
    env = {"PARLEY_LOG_LEVEL": "loud", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "parley.cli", "agents", "validate", "x.yaml"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "PARLEY_LOG_LEVEL" in out.stderr
