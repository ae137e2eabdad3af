"""The delivery worker ``parley serve`` runs: claims due outbox rows, POSTs them signed through the SSRF guard,
and records each attempt.

2xx: delivered. A 3xx (redirects are not followed), a 4xx other than 408/429, or a URL the guard refuses: given
up at once (sending again would not help). 5xx, 408, 429, timeouts and connection errors: tried again after an
exponential backoff, until ``max_attempts``. Delivery is at least once (a receiver drops repeats by
``X-Parley-Event-Id``). The rows live in the database, so a restart resumes where the last worker stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import structlog
from cryptography.fernet import MultiFernet

from parley.net.ssrf import OutboundPolicy, OutboundRefused, guarded_client
from parley.store.db import Database
from parley.store.models import utcnow
from parley.webhooks.settings import WebhookSettings
from parley.webhooks.signing import headers
from parley.webhooks.store import Claimed, WebhookRepo, claim, finish, release

log = structlog.get_logger(__name__)

RETRIED_4XX = (408, 429)


@dataclass(frozen=True)
class Outcome:
    status: str  # delivered, pending (to retry), failed
    code: int | None
    latency_ms: float | None
    error: str | None


def judge(code: int) -> str:
    if 200 <= code < 300:
        return "delivered"
    if 300 <= code < 500 and code not in RETRIED_4XX:
        return "failed"
    return "pending"


class WebhookWorker:
    """One per process; several processes may share the database (the leases keep them apart)."""

    def __init__(
        self,
        db: Database,
        cipher: Callable[[], MultiFernet],
        settings: WebhookSettings | None = None,
        policy: OutboundPolicy | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.db, self._cipher = db, cipher
        self.settings = settings or WebhookSettings()
        self.policy = policy if policy is not None else OutboundPolicy.from_settings()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    def start(self) -> WebhookWorker:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-worker")
        return self

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stops claiming, cancels the attempts under way (they stay pending) and frees this worker's leases."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        try:
            async with self.db.session() as s:
                await release(s, self.worker_id)
        except Exception:
            log.warning("webhook_leases_not_released", worker=self.worker_id)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            try:
                claimed = await self.claim()
            except Exception:
                log.exception("webhook_claim_failed")
                claimed = []
            for c in claimed:
                task = asyncio.get_running_loop().create_task(self.deliver(c), name=f"webhook-delivery-{c.id}")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if claimed and len(self._inflight) < self.settings.batch:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)
            except TimeoutError:
                pass

    async def claim(self) -> list[Claimed]:
        room = self.settings.batch - len(self._inflight)
        if room <= 0:
            return []
        async with self.db.session() as s:
            lease = max(self.settings.lease_s, 2 * self.settings.timeout_s)  # no lease ends during an attempt
            return await claim(s, self.worker_id, lease, room)

    async def run_once(self) -> int:
        """Claims and delivers what is due now (one attempt each); how many (tests, a one-shot drain)."""
        claimed = await self.claim()
        await asyncio.gather(*(self.deliver(c) for c in claimed))
        return len(claimed)

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = guarded_client(self.policy, timeout=self.settings.timeout_s)
        return self._client

    async def attempt(self, c: Claimed) -> Outcome:
        """One POST of the event; never raises for the receiver's failures."""
        secret = WebhookRepo(None, self._cipher()).secret(c.webhook)  # type: ignore[arg-type]
        if secret is None:
            return Outcome("failed", None, None, "the signing secret cannot be decrypted (another credentials key)")
        problem = self.policy.url_problem(c.url)
        if problem:
            return Outcome("failed", None, None, f"refused: the URL {problem}")
        body = json.dumps(c.payload, separators=(",", ":")).encode()
        started = time.perf_counter()
        sent = headers(secret, body, c.payload["id"], c.payload["type"])
        try:  # streamed and never read: only the status matters, however much the receiver answers
            async with self.client().stream("POST", c.url, content=body, headers=sent) as response:
                code = response.status_code
        except OutboundRefused as exc:
            return Outcome("failed", None, None, str(exc))
        except httpx.TimeoutException:
            return Outcome("pending", None, _ms(started), f"no answer within {self.settings.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome("pending", None, _ms(started), f"{type(exc).__name__}: {str(exc)[:200]}")
        return Outcome(judge(code), code, _ms(started), None)

    async def deliver(self, c: Claimed) -> None:
        outcome = await self.attempt(c)
        attempts = c.attempts + 1
        status, next_at = outcome.status, None
        if status == "pending":
            if attempts >= self.settings.max_attempts:
                status = "failed"
            else:
                next_at = utcnow() + timedelta(seconds=self.settings.backoff(attempts))
        async with self.db.session() as s:
            await finish(s, self.worker_id, c.id, status=status, attempts=attempts, next_attempt_at=next_at,
                         response_code=outcome.code, latency_ms=outcome.latency_ms, error=outcome.error)  # fmt: skip
        log.info("webhook_delivery", webhook_id=str(c.webhook.id), delivery=c.id, status=status,
                 attempts=attempts, code=outcome.code)  # fmt: skip
        if status != "pending":
            self.wake()  # the call's next event may be due now


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
