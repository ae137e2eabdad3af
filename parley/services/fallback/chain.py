"""What every stage's chain shares: its links in order, error classification, deadlines on output, events.

A chain is made per call (its providers are the call's), its breakers are the process's. Events (a switch, an
error, a breaker opening or closing, a probe) collect in :attr:`Chain.events` until the stage that uses the chain
drains them onto the call record, with the turn they happened in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from parley.metrics import observe_chain_event
from parley.redact import redact_text
from parley.services.errors import ErrorKind, ProviderError
from parley.services.fallback.breaker import Breaker, BreakerState
from parley.services.fallback.config import Deadlines

log = structlog.get_logger(__name__)
P = TypeVar("P")
T = TypeVar("T")


@dataclass
class Link(Generic[P]):
    """One provider of a chain: its name (for events), the instance, its deadlines and its shared breaker."""

    name: str
    provider: P
    deadlines: Deadlines
    breaker: Breaker


def classify(exc: BaseException, provider: str) -> ProviderError:
    """Any failure as a :class:`ProviderError` (a provider that raised something else is a server fault)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TimeoutError):
        return ProviderError(f"{provider}: no output within its deadline", kind=ErrorKind.TIMEOUT, provider=provider)
    if isinstance(exc, ConnectionError | OSError):
        return ProviderError(f"{provider}: {type(exc).__name__}", kind=ErrorKind.CONNECTION, provider=provider)
    return ProviderError(f"{provider}: {type(exc).__name__}", kind=ErrorKind.SERVER, provider=provider)


async def timed(pieces: AsyncIterator[T], deadlines: Deadlines, first: bool = True) -> AsyncGenerator[T, None]:
    """``pieces`` with a deadline on the first one (``first_s``) and on each gap after (``stall_s``); closing this
    closes ``pieces`` (a barge-in stops the provider's generation)."""
    wait = deadlines.first_s if first else deadlines.stall_s
    iterator = aiter(pieces)
    try:
        while True:
            try:
                async with asyncio.timeout(wait):
                    piece = await anext(iterator)
            except StopAsyncIteration:
                return
            wait = deadlines.stall_s
            yield piece
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


@dataclass
class Chain(Generic[P]):
    """A stage's providers in order; ``stage`` is "llm", "tts" or "stt"."""

    stage: str
    links: list[Link[P]]
    probe: Callable[[P, Deadlines], Awaitable[None]]
    events: list[dict[str, Any]] = field(default_factory=list)
    served_by: str = ""  # the link that served the latest request
    _probes: set[asyncio.Task[None]] = field(default_factory=set)
    _fallback_served: str = ""

    def drain(self) -> list[dict[str, Any]]:
        """Events since the last drain, for the call record; a ``served`` event names the fallback that served
        (none while the primary does)."""
        out, self.events = self.events, []
        if self._fallback_served:
            served = {"type": "served", "stage": self.stage, "provider": self._fallback_served}
            out.append(served)
            observe_chain_event(served)
            self._fallback_served = ""
        return out

    def candidates(self) -> list[Link[P]]:
        """Links a caller's request may go to now, in order; a due probe starts in the background. When none is
        serving (all open), the last one is tried anyway: a caller must hear something."""
        ready = []
        for link in self.links:
            if link.breaker.probe_due():
                self._start_probe(link)
            if link.breaker.serving():
                ready.append(link)
        if not ready:
            usable = [k for k in self.links if k.breaker.state is not BreakerState.DISABLED]
            ready = usable[-1:] or self.links[-1:]
        return ready

    def succeeded(self, link: Link[P]) -> None:
        if link.breaker.succeeded() is not None:
            self._event("breaker", provider=link.name, state="closed")
        self.served_by = link.name
        if link is not self.links[0]:
            self._fallback_served = link.name

    def failed(self, link: Link[P], exc: BaseException, said: bool, started: float) -> ProviderError:
        """Record ``link``'s failure (its breaker, an event, the log) and return it classified."""
        error = classify(exc, link.name)
        state = link.breaker.failed(error)
        ms = round((time.perf_counter() - started) * 1000)
        detail = redact_text(str(error)[:200])
        log.warning("provider_failed", stage=self.stage, provider=link.name, kind=error.kind, ms=ms, detail=detail)
        self._event("provider_error", provider=link.name, kind=error.kind.value, mid_output=said, ms=ms)
        self._event("breaker", provider=link.name, state=state.value)
        return error

    def switched(self, old: Link[P], new: Link[P], said: bool) -> None:
        log.info("provider_switch", stage=self.stage, to=new.name, **{"from": old.name})
        self._event("provider_switch", provider=new.name, previous=old.name, mid_output=said)

    def _event(self, event_type: str, **data: Any) -> None:
        event = {"type": event_type, "stage": self.stage, **data}
        self.events.append(event)
        observe_chain_event(event)

    def _start_probe(self, link: Link[P]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._run_probe(link))
        except RuntimeError:  # no loop (a synchronous caller): the next call's check starts it
            link.breaker.state = BreakerState.OPEN
            return
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _run_probe(self, link: Link[P]) -> None:
        started = time.perf_counter()
        try:
            await self.probe(link.provider, link.deadlines)
        except Exception as exc:
            error = classify(exc, link.name)
            link.breaker.failed(error)
            self._event("probe", provider=link.name, ok=False, kind=error.kind.value)
            return
        link.breaker.succeeded()
        ms = round((time.perf_counter() - started) * 1000)
        self._event("probe", provider=link.name, ok=True, ms=ms)
        self._event("breaker", provider=link.name, state="closed")

    async def prepare(self) -> None:
        """Prepare every link within its connect deadline. One that cannot start is recorded as failed (its
        breaker opens) and the call goes on with the others; only a chain with no ready link raises."""

        async def one(link: Link[P]) -> bool:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(link.deadlines.connect_s):
                    await link.provider.prepare()  # type: ignore[attr-defined]
            except Exception as exc:
                self.failed(link, exc, False, started)
                return False
            return True

        if not any(await asyncio.gather(*(one(link) for link in self.links))):
            raise ProviderError(f"no {self.stage} provider of the chain could start", kind=ErrorKind.CONNECTION)

    async def aclose(self) -> None:
        """Stop probes and close every link's provider."""
        for task in list(self._probes):
            task.cancel()
        await asyncio.gather(*self._probes, return_exceptions=True)
        closing = (link.provider.aclose() for link in self.links)  # type: ignore[attr-defined]
        await asyncio.gather(*closing, return_exceptions=True)


def drain_events(provider: Any) -> list[dict[str, Any]]:
    """The chain events of ``provider`` (a chain, or a wrapper of one such as the grounded LLM), else none."""
    for _ in range(4):
        chain = getattr(provider, "chain", None)
        if isinstance(chain, Chain):
            return chain.drain()
        provider = getattr(provider, "inner", None)
        if provider is None:
            break
    return []
