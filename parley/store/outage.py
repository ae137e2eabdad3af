"""The database (or its network) gone for a while: which failures pass with time, and a background loop's log of
an outage — one warning when it starts and one line when it ends, not a traceback every tick."""

from __future__ import annotations

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = structlog.get_logger(__name__)


def transient(exc: BaseException) -> bool:
    """A failure that passes with time (the database or its network), worth retrying, not a bad write."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError | ConnectionError)


class OutageLog:
    """For a loop that runs every tick: a transient failure is logged once per outage (``<loop>_db_unavailable``,
    then ``<loop>_db_back``); anything else is a bug and keeps its traceback every time."""

    def __init__(self, loop: str) -> None:
        self.loop = loop
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not transient(exc):
            log.exception(f"{self.loop}_failed", exc_info=exc)
        elif not self.down:
            self.down = True
            log.warning(f"{self.loop}_db_unavailable", error=type(exc).__name__, detail=str(exc)[:200])

    def ok(self) -> None:
        if self.down:
            self.down = False
            log.info(f"{self.loop}_db_back")
