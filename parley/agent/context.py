"""The conversation the LLM sees: system prompt, then the turns as the caller heard them."""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.services.llm.base import Message

SUMMARY_CHARS = 600


@dataclass(frozen=True)
class Turn:
    """One exchange: what the caller said, the tool calls and results of the reply, what the caller heard."""

    user: str
    assistant: str
    tools: tuple[Message, ...] = ()


@dataclass
class Conversation:
    """Chat history; an interrupted reply is kept only as far as the caller heard it."""

    system_prompt: str
    max_history_turns: int = 8
    greeting: str = ""
    _turns: list[Turn] = field(default_factory=list)
    #: tool exchanges that finished after their reply was cut off: the next reply sees them
    _late: list[Message] = field(default_factory=list)
    #: what the caller said in turns that left the window, folded into one line (a long call never overflows)
    _earlier: str = ""

    def system_messages(self) -> list[Message]:
        messages: list[Message] = [{"role": "system", "content": self.system_prompt.strip()}]
        if self.greeting:
            messages.append({"role": "assistant", "content": self.greeting})
        return messages

    def messages_for(self, user_text: str) -> list[Message]:
        """The prompt for a reply to ``user_text``: oldest turns drop out first, the system prompt never does.

        The greeting stays right after the system prompt, so the prefix the LLM has
        cached (system prompt + greeting + earlier turns) is reused turn after turn.
        """
        messages = self.system_messages()
        if self._earlier:  # after the cached prefix (system prompt, greeting), before the verbatim turns
            messages.append({"role": "system", "content": f"Earlier in this call the caller said: {self._earlier}"})
        history = self._turns[-self.max_history_turns :] if self.max_history_turns else []
        for turn in history:
            messages.append({"role": "user", "content": turn.user})
            messages.extend(turn.tools)
            if turn.assistant:
                messages.append({"role": "assistant", "content": turn.assistant})
        messages.extend(self._late)
        messages.append({"role": "user", "content": user_text})
        return messages

    def add_turn(self, user_text: str, heard_reply: str, tools: tuple[Message, ...] | list[Message] = ()) -> None:
        """Remember a finished exchange; tool exchanges that came late join this turn, ahead of its own."""
        self._turns.append(Turn(user_text, heard_reply, (*self._late, *tools)))
        self._late.clear()
        if self.max_history_turns:  # turns leaving the window fold into the running summary (extractive, no LLM)
            while len(self._turns) > self.max_history_turns:
                gone = self._turns.pop(0)
                self._earlier = f"{self._earlier}; {gone.user}".strip("; ")[-SUMMARY_CHARS:]

    def keep_context(self, policy: str, last_n: int = 6) -> None:
        """A flow moved to another node: keep all turns, the last ``last_n``, none, or a ``summary`` — the
        caller's earlier words folded into one turn (extractive: no LLM call on the hot path)."""
        if policy == "none":
            self._turns.clear()
            self._earlier = ""
        elif policy == "last_n":
            del self._turns[: max(0, len(self._turns) - last_n)]
        elif policy == "summary" and self._turns:
            said = "; ".join([self._earlier, *(t.user for t in self._turns)]).strip("; ")[-SUMMARY_CHARS:]
            self._turns, self._earlier = [Turn(f"(Earlier in this call I said: {said})", "")], ""

    def add_late(self, messages: list[Message]) -> None:
        """A tool call and its result that arrived after their reply was talked over (a read tool ran on)."""
        self._late.extend(messages)

    @property
    def turns(self) -> list[tuple[str, str]]:
        return [(t.user, t.assistant) for t in self._turns]


def heard_part(text: str, fraction: float) -> str:
    """The words of ``text`` a caller heard when ``fraction`` of its audio played (whole words only)."""
    if fraction >= 1:
        return text
    words = text.split()
    return " ".join(words[: int(len(words) * max(0.0, fraction))])
