"""Logging: structured (console or JSON lines), bounded, redacted, and written off the event loop.

Every record, structlog's and the standard library's (uvicorn, httpx…), goes to one bounded queue; a thread formats
and writes it. The event loop only pays for building the record and summarising a traceback (no locals, the last
``MAX_FRAMES`` frames): a rich traceback with locals, rendered on the loop, once stalled every call for seconds.
A full queue drops records (and counts them) rather than block the caller: the media path never waits on a log.
``PARLEY_LOG_LEVEL`` (debug, info — the default —, warning, error, critical) and ``PARLEY_LOG_FORMAT`` (console,
json) choose what is written and how; standard-library loggers (uvicorn, httpx, the LLM providers') share the
pipeline, so one threshold and one format hold for every line.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import IO, Any

import structlog
from structlog.types import EventDict

from parley.redact import MASK, is_secret_field, redact_text, redact_value

FORMAT_ENV = "PARLEY_LOG_FORMAT"
FORMATS = ("console", "json")
LEVEL_ENV = "PARLEY_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LEVEL = "info"  # an operator sees calls start and end, the service start, and every problem
MAX_FRAMES = 20  # innermost frames kept per exception in a chain
MAX_CHAINED = 5  # __cause__/__context__ links followed
MAX_TRACEBACK_CHARS = 8_000
MAX_FIELD_CHARS = 2_000
QUEUE_SIZE = 5_000
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")
#: libraries whose info lines are routine (alembic: a dozen per start; httpx: one per request), written when debugging
CHATTY_LOGGERS = ("alembic", "httpx")
_TB_ATTR = "parley_traceback"  # a stdlib record's traceback summary, taken on the calling thread

_listener: logging.handlers.QueueListener | None = None
_installed: logging.Handler | None = None


def summarize_exception(exc_info: Any) -> traceback.TracebackException | None:
    """A traceback summary that holds no frames (so no locals stay alive) and has read no source lines yet: cheap
    enough for the event loop; the writer thread looks the lines up and formats."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3 or exc_info[1] is None:
        return None
    try:
        return traceback.TracebackException(
            exc_info[0],
            exc_info[1],
            exc_info[2],
            limit=-MAX_FRAMES,
            lookup_lines=False,
            capture_locals=False,
            max_group_width=5,
            max_group_depth=3,
        )
    except Exception:  # never lose the line to a broken exception object
        return None


def format_exception(summary: traceback.TracebackException) -> str:
    """The traceback as text: at most MAX_CHAINED exceptions of a chain, redacted, then cut to MAX_TRACEBACK_CHARS
    keeping its start and its end (where the exception itself is)."""
    link: traceback.TracebackException | None = summary
    for _ in range(MAX_CHAINED):
        link = (link.__cause__ or link.__context__) if link is not None else None
    if link is not None:
        link.__cause__ = link.__context__ = None
    text = "".join(summary.format()).rstrip("\n")
    if len(text) > 2 * MAX_TRACEBACK_CHARS:  # redaction's time (GIL held) stays bounded
        text = text[:MAX_TRACEBACK_CHARS] + "\n" + text[-MAX_TRACEBACK_CHARS:]
    text = redact_text(text)
    if len(text) > MAX_TRACEBACK_CHARS:
        head, tail = MAX_TRACEBACK_CHARS // 4, MAX_TRACEBACK_CHARS * 3 // 4
        text = f"{text[:head]}\n  … [{len(text) - head - tail} chars cut] …\n{text[-tail:]}"
    return text


def capture_exc_info(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor (on the caller's thread): turn ``exc_info`` into a frame-free summary while the
    exception is still current."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        summary = summarize_exception(exc_info)
        if summary is not None:
            event_dict[_TB_ATTR] = summary
    return event_dict


def redact_processor(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: credentials masked in every value, secret-named fields masked whole, sizes bounded."""
    return {k: MASK if v and is_secret_field(k) else redact_value(v, MAX_FIELD_CHARS) for k, v in event_dict.items()}


def _to_stdlib(_: Any, __: str, event_dict: EventDict) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (event_dict,), {}


class RedactingFilter(logging.Filter):
    """Standard-library records: the message (with its arguments) redacted before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # structlog's: ParleyFormatter redacts it field by field
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} {record.args!r}"
        record.msg, record.args = redact_value(message, MAX_FIELD_CHARS * 2), None
        return True


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: formatting here would put it back on the event loop."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.dropped = 0
        self._lock = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            setattr(record, _TB_ATTR, summarize_exception(record.exc_info))
            record.exc_info = record.exc_text = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self._report_drops()
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _report_drops(self) -> None:
        with self._lock:
            count, self.dropped = self.dropped, 0
        note = logging.LogRecord("parley.logs", logging.WARNING, __file__, 0, "", (), None)
        note.msg = {"event": "log_records_dropped", "count": count, "why": "the log writer fell behind"}
        self.queue.put_nowait(note)


class ParleyFormatter(logging.Formatter):
    """One record -> one line (console) or one JSON object, with a bounded, redacted traceback."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"
        self.console = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)

    def format(self, record: logging.LogRecord) -> str:
        raw: dict[str, Any] = dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        summary = raw.pop(_TB_ATTR, None) or getattr(record, _TB_ATTR, None)
        ed = redact_processor(None, "", raw)
        ed.setdefault("level", record.levelname.lower())
        ed.setdefault("logger", record.name)
        ed["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        if isinstance(summary, traceback.TracebackException):
            ed["exception"] = format_exception(summary)
        if self.json:
            return json.dumps(ed, default=str, ensure_ascii=False)
        return str(self.console(None, record.levelname.lower(), ed))


def _choice(value: str | None, env: str, default: str, allowed: tuple[str, ...]) -> str:
    """``value``, else the environment variable, else ``default``; anything not in ``allowed`` is a ValueError."""
    chosen = (value or os.environ.get(env) or default).strip().lower()
    if chosen not in allowed:
        raise ValueError(f"{env} must be one of {', '.join(allowed)}, not {chosen!r}")
    return chosen


def log_level(verbose: bool = False, level: str | None = None) -> int:
    """The threshold: DEBUG when verbose, else ``level``, else ``PARLEY_LOG_LEVEL`` (default info)."""
    if verbose:
        return logging.DEBUG
    return logging.getLevelNamesMapping()[_choice(level, LEVEL_ENV, DEFAULT_LEVEL, LEVELS).upper()]


def configure_logging(
    verbose: bool = False, fmt: str | None = None, stream: IO[str] | None = None, level: str | None = None
) -> None:
    """Install the queue and its writer thread; ``fmt`` (default ``PARLEY_LOG_FORMAT``) is ``console`` or ``json``,
    ``level`` (default ``PARLEY_LOG_LEVEL``, then info; ``verbose``: debug) the least severity written.

    Called again, it replaces the previous set-up (flushing it first)."""
    global _listener, _installed
    fmt = _choice(fmt, FORMAT_ENV, "console", FORMATS)
    threshold = log_level(verbose, level)
    stop_logging()
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(ParleyFormatter(fmt))
    writer.addFilter(RedactingFilter())
    records: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
    _installed = _Enqueue(records)
    root = logging.getLogger()
    root.addHandler(_installed)
    root.setLevel(threshold)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.NOTSET if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
        )
    for name in SERVER_LOGGERS:  # a server's own handlers would write (unredacted, on the loop) beside ours
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture_exc_info, _to_stdlib],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def ensure_logging() -> None:
    """The set-up above, unless one is in place: an app served some other way than `parley serve` (uvicorn
    --factory, gunicorn) must not keep structlog's default, which renders tracebacks with locals on the loop."""
    if _listener is None:
        configure_logging()


def stop_logging() -> None:
    """Write out what is queued and stop the writer thread (at exit, or before a new set-up)."""
    global _listener, _installed
    if _installed is not None:
        logging.getLogger().removeHandler(_installed)
        _installed = None
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop_logging)
