"""A 2xx to an INVITE, sent again until its ACK arrives (RFC 3261 section 13.3.1.4).

The INVITE server transaction ends with the 2xx, so the user agent, not the transaction layer, keeps it alive:
losing it would leave a caller in silence. RFC 3261 gives up after 64*T1 (32 s); an INVITE never ACKed holds an
RTP port and loaded models all that time, so Parley gives up after ``timeout_s`` (10 s by default: five sends).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from parley.sip.protocol.message import Response
from parley.sip.protocol.transactions import T1, T2, Addr, ServerTransaction, TransactionLayer


class Reliable2xx:
    """At most one unacknowledged 2xx of a dialog, resent with T1 doubling to T2."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, layer: TransactionLayer, timeout_s: float, give_up: Callable[[], None]
    ) -> None:
        self.loop, self.layer, self.timeout_s, self.give_up = loop, layer, timeout_s, give_up
        self._pending: tuple[int, Response, Addr] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> bool:
        """A 2xx is out and not ACKed yet (a re-INVITE now gets 500 with Retry-After)."""
        return self._pending is not None

    def send(self, txn: ServerTransaction, response: Response) -> None:
        txn.respond(response)
        self._pending = (txn.request.cseq[0], response, txn.addr)
        self._schedule(T1, 0.0)

    def acked(self, cseq: int) -> bool:
        """An ACK with ``cseq`` arrived: True when it acknowledges the pending 2xx (which then stops)."""
        if self._pending is None or cseq != self._pending[0]:
            return False
        self._pending = None
        self.stop()
        return True

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _schedule(self, interval: float, elapsed: float) -> None:
        delay = min(interval, max(0.0, self.timeout_s - elapsed))  # give up on time
        self._timer = self.loop.call_later(delay, self._resend, interval, elapsed + delay)

    def _resend(self, interval: float, elapsed: float) -> None:
        if self._pending is None:
            return
        if elapsed >= self.timeout_s - 1e-6:
            self._pending = None
            self.give_up()
            return
        self.layer.send(self._pending[1], self._pending[2])
        self._schedule(min(interval * 2, T2), elapsed)
