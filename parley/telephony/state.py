"""What carriers need from the running service, named here so that nothing in telephony imports the API.

The app that mounts the carriers' routes (:mod:`parley.api.app`) keeps its state, which
has these parts, as ``app.state.parley``; carrier routes ask for :data:`State`, as API
routes ask for theirs.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import Depends
from starlette.requests import HTTPConnection

from parley.config import Settings
from parley.store.blobs import BlobStore
from parley.store.db import Database
from parley.store.nonces import NonceStore
from parley.store.ratelimit import RateLimiter


class TelephonyState(Protocol):
    """The parts of the service a call over a carrier uses."""

    settings: Settings
    db: Database
    blobs: BlobStore
    limiter: RateLimiter  # carrier webhooks and stream handshakes per source address
    nonces: NonceStore  # one-use signatures: a captured webhook or stream answer opens nothing twice


def telephony_state(conn: HTTPConnection) -> TelephonyState:
    """FastAPI dependency of every carrier route (HTTP and WebSocket alike): the state of the app that mounts them.

    Read from the app rather than provided through ``dependency_overrides``: with any override, FastAPI analyses
    every dependency of every route again on each request."""
    state: TelephonyState = conn.app.state.parley
    return state


State = Annotated[TelephonyState, Depends(telephony_state)]
