"""An LLM chain: the first healthy provider answers; one that fails mid-reply is continued by the next.

The next provider gets the conversation plus the words already streamed (as the assistant's unfinished turn) and
a note to go on from there, so the caller hears the reply carry on rather than start again. Switching back to the
primary happens only at a request boundary (a new turn or tool step) once its breaker has closed after a probe.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from parley.services.fallback.chain import Chain, timed
from parley.services.fallback.config import Deadlines
from parley.services.llm.base import LLM, LLMError, Message, Tool, ToolCall

CONTINUE_NOTE = (
    "Your previous reply was cut off after the words above. Continue it from exactly where it stopped: do not "
    "repeat anything already said, do not apologise, do not start over."
)
PROBE_MESSAGES: list[Message] = [{"role": "user", "content": "Reply with the single word OK."}]


async def probe_llm(llm: LLM, deadlines: Deadlines) -> None:
    """A synthetic request: the first piece of a one-word reply, within the link's first-output deadline."""
    async with aclosing(timed(llm.stream(PROBE_MESSAGES), deadlines)) as pieces:
        async for _ in pieces:
            return
    raise LLMError("probe: empty reply")


def continued(messages: list[Message], said: str) -> list[Message]:
    """``messages`` for the next provider when ``said`` was already streamed to the caller."""
    if not said.strip():
        return messages
    return [*messages, {"role": "assistant", "content": said}, {"role": "system", "content": CONTINUE_NOTE}]


class FallbackLLM(LLM):
    """Streams from the chain's first healthy link; tools are offered to links that support them."""

    def __init__(self, chain: Chain[LLM]) -> None:
        self.chain = chain
        self.supports_tools = any(link.provider.supports_tools for link in chain.links)

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        said = ""
        links = self.chain.candidates()
        last: Exception | None = None
        for i, link in enumerate(links):
            if i:
                self.chain.switched(links[i - 1], link, bool(said))
            started = time.perf_counter()
            offered = tools if link.provider.supports_tools else ()
            try:
                source = link.provider.stream(continued(messages, said), offered)
                async with aclosing(timed(source, link.deadlines)) as pieces:
                    async for piece in pieces:
                        if isinstance(piece, str):
                            said += piece
                        yield piece
            except Exception as exc:
                last = self.chain.failed(link, exc, bool(said), started)
                continue
            self.chain.succeeded(link)
            return
        raise LLMError(f"every LLM of the chain failed (last: {last})") from last

    async def warm(self, messages: list[Message]) -> None:
        await self.chain.links[0].provider.warm(messages)

    async def prepare(self) -> None:
        await self.chain.prepare()

    async def aclose(self) -> None:
        await self.chain.aclose()
