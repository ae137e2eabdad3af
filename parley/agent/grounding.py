"""Grounded replies: the LLM may only state numbers, days and names that the agent's knowledge backs.

:class:`GroundedLLM` wraps any provider. Before a reply it adds, after the caller's words, the one or two clauses
of the agent's prompt most about the question: a small model answers from the clause in front of it more often
than from a long prompt. While the reply streams, text passes through at once until a part of a sentence makes a
claim (see :mod:`parley.agent.claims`); that part's words go out as long as their claims are backed, the rest is
held until the part ends (a comma, a full stop) and is then either released or, when the knowledge does not back
it, replaced by the agent's fallback line and the generation stopped. When
the caller asks about something the prompt never mentions, a confirming sentence ("Yes, we take Delta
insurance") is held whole and replaced the same way. The caller never hears a made-up price, day, name or "yes";
the cost is the few tokens of one held part.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

import structlog
from pydantic import BaseModel, ConfigDict, Field

from parley.agent.claims import DAYS, MONTHS, Claims, Knowledge, claims_of
from parley.services.llm.base import LLM, Message, Tool, ToolCall

log = structlog.get_logger(__name__)

MAX_CORRECTION_WORDS = 20  # a longer clause of the prompt is more likely an instruction than a fact to say
_PART_END = re.compile(r"[,;:.!?]+(?=\s)|\s(?:and|but|or)(?=\s)")
_SENTENCE_END = re.compile(r"[.!?]+\s*$")
_SENTENCE_BREAK = re.compile(r"[.!?]+(?=\s)")
#: a reply that confirms something: "Yes, …", "we do/offer/take …", "… is available"
_AFFIRMS = re.compile(
    r"^\W*(yes|yeah|yep|absolutely)\b|\bwe (do|offer|have|accept|take|provide|cover)\b"
    r"|\b(is|are) (available|offered|accepted|covered)\b|\bwe(\W?re| are) open\b",
    re.IGNORECASE,
)
_NUMBER_WORDS = tuple(
    [
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "eleven",
        "twelve",
        "thirteen",
        "fifteen",
    ]
)
_CLAIM_PREFIXES = (*DAYS, *MONTHS, *_NUMBER_WORDS)


class GroundingSettings(BaseModel):
    """``grounding`` in the agent document."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="check the reply's claims (default: on for the embedded llama)")
    hints: bool = Field(
        False,
        description="put the prompt's most relevant facts after the caller's question (bench/answers.py: a little "
        "more often right, ~180 ms more to the first token on 2 cores)",
    )
    fallback: str = Field(
        "I'm not sure about that. I'll ask a colleague to call you back.",
        min_length=1,
        max_length=300,
        description="said instead of a claim the agent's knowledge does not back",
    )

    def active(self, provider: str) -> bool:
        return self.enabled if self.enabled is not None else provider == "llama"


class ClaimGuard:
    """Releases streamed text part by part; a part with a claim waits for its end and must be backed."""

    def __init__(self, knowledge: Knowledge, question: str, fallback: str) -> None:
        self.knowledge = knowledge
        self.fallback = fallback
        self._question_words = claims_of(question).words
        #: the caller asks about something the prompt never mentions ("Do you take Delta insurance?"): a "yes"
        #: is then made up, so replies are checked a whole sentence at a time
        self._unknown_topic = bool(self._question_words) and not knowledge.knows_about(self._question_words)
        self._sentence_words: frozenset[str] = frozenset()
        self._part = ""  # the current part of a sentence
        self._sent = 0  # how much of it has been released
        self._tail = ""  # a word that may still grow into a claim ("Sun" → "Sunday")
        self._said = ""  # the last text released (to put a space before the fallback)
        self.failed: str | None = None  # the part that was not backed

    def feed(self, piece: str) -> str:
        """Text that may be said now ("" while a part is held); after a failure, the fallback once."""
        if self.failed is not None:
            return ""
        text = self._tail + piece
        self._tail = _growing_word(text)
        out = self._take(text[: len(text) - len(self._tail)])
        self._said = out or self._said
        return out

    def finish(self) -> str:
        """The end of the reply: the held part is checked and released (or replaced)."""
        if self.failed is not None:
            return ""
        out = self._take(self._tail)
        self._tail = ""
        if self.failed is None and self._part:
            out += self._close_part(self._part)
            self._part = ""
        return out

    def _take(self, text: str) -> str:
        self._part += text
        out = ""
        ends = _SENTENCE_BREAK if self._unknown_topic else _PART_END
        while self.failed is None and (m := ends.search(self._part)):
            part, rest = self._part[: m.end()], self._part[m.end() :]
            out += self._close_part(part)
            self._part = rest if self.failed is None else ""
        if self.failed is None and self._part and not self._may_affirm(self._part):
            out += self._release_backed()
        return out

    def _release_backed(self) -> str:
        """The held part's text that may be said before the part ends: all of it while it claims nothing; its
        complete words while their claims are backed ("We're open on Saturday" before "from 9 to 1"). The last
        word may still grow ("8" → "80", "Spring" → "Springfield"), so it waits for the next piece."""
        part = self._part
        if claims_of(part).empty:
            upto = len(part)
        else:
            upto = len(part) if part[-1].isspace() else part.rfind(" ") + 1
            if upto <= self._sent:
                return ""
            head = claims_of(part[:upto])
            if not self._backed(head):
                # the prompt says the opposite: no later word will make it right, so the caller is not kept
                # waiting for the part to end
                correction = self.knowledge.contradiction(head, self._context)
                return "" if correction is None else self._fail(part, correction)
        out, self._sent = part[self._sent : upto], max(self._sent, upto)
        return out

    def _close_part(self, part: str) -> str:
        claims = claims_of(part)
        unsent, self._sent = part[self._sent :], 0
        if not claims.empty and not self._backed(claims):
            return self._fail(part, self.knowledge.contradiction(claims, self._context))
        if self._may_affirm(part) and not self.knowledge.knows_about(claims.words):
            return self._fail(part)
        self._sentence_words = frozenset() if _SENTENCE_END.search(part) else self._sentence_words | claims.words
        return unsent

    def _may_affirm(self, text: str) -> bool:
        return self._unknown_topic and bool(_AFFIRMS.search(text))

    @property
    def _context(self) -> frozenset[str]:
        return self._sentence_words | self._question_words

    def _backed(self, claims: Claims) -> bool:
        return self.knowledge.supports(claims, self._context)

    def _fail(self, part: str, correction: str | None = None) -> str:
        """The fallback line, or — when the prompt says the opposite in a short clause — that clause, as a
        correction ("Sorry, I misspoke. Opening hours: closed on Sunday.")."""
        self.failed = part.strip()
        self._part = ""
        log.warning("reply_claim_not_backed", part=self.failed[:200], corrected=correction is not None)
        lead = " " if self._said and not self._said[-1].isspace() else ""
        if correction is not None and len(correction.split()) <= MAX_CORRECTION_WORDS:
            return f"{lead}Sorry, I misspoke. {correction.rstrip('.')}."
        return f"{lead}{self.fallback}"


def _growing_word(text: str) -> str:
    """The trailing word of ``text`` if it could still become a day, month or number word."""
    m = re.search(r"[A-Za-z]{3,}$", text)
    if m and any(p.startswith(m.group().lower()) and p != m.group().lower() for p in _CLAIM_PREFIXES):
        return m.group()
    return ""


def hinted(messages: list[Message], knowledge: Knowledge) -> list[Message]:
    """The prompt with the one or two facts most about the question after the caller's words.

    Appended to the last user message rather than as a new message, so the prefix the LLM has cached (system
    prompt, greeting, earlier turns) is unchanged.
    """
    if not messages or messages[-1]["role"] != "user":
        return messages
    question = messages[-1]["content"]
    facts = knowledge.relevant(question)
    if not facts:
        return messages  # every token here is prompt the model evaluates before its first word
    return [*messages[:-1], {"role": "user", "content": f"{question}\n(Facts: {'; '.join(facts)})"}]


class GroundedLLM(LLM):
    """Any LLM, with its replies' claims checked against the conversation's own text (see the module doc)."""

    def __init__(self, inner: LLM, settings: GroundingSettings) -> None:
        self.inner = inner
        self.settings = settings
        self.supports_tools = inner.supports_tools

    def __getattr__(self, name: str) -> object:  # provider_name, model details for logs
        return getattr(self.inner, name)

    async def stream(self, messages: list[Message], tools: Sequence[Tool] = ()) -> AsyncGenerator[str | ToolCall, None]:
        prompt = Knowledge.of(m["content"] for m in messages[:-1] if m["role"] == "system")
        question = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
        knowledge = Knowledge.of(
            (m["content"] for m in messages if m["role"] == "system"),
            (m["content"] for m in messages if m["role"] != "system"),
        )
        guard = ClaimGuard(knowledge, question, self.settings.fallback)
        sent = hinted(messages, prompt) if self.settings.hints else messages
        calls: list[ToolCall] = []  # after the text they belong to, which may still be held
        async with aclosing(self.inner.stream(sent, tools)) as stream:
            async for piece in stream:
                if isinstance(piece, ToolCall):
                    calls.append(piece)
                    continue
                if out := guard.feed(piece):
                    yield out
                if guard.failed is not None:
                    return  # closing the inner stream stops the generation; its actions are not taken
        if out := guard.finish():
            yield out
        if guard.failed is None:
            for call in calls:
                yield call

    async def warm(self, messages: list[Message]) -> None:
        await self.inner.warm(messages)

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def aclose(self) -> None:
        await self.inner.aclose()


def grounded(llm: LLM, settings: GroundingSettings, provider: str) -> LLM:
    """``llm`` with its claims checked when the agent's ``grounding`` is on for this provider."""
    return GroundedLLM(llm, settings) if settings.active(provider) else llm
