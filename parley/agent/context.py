"""The conversation the LLM sees: system prompt, then the turns as the caller heard them."""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.services.llm.base import Message


@dataclass
class Conversation:
    """Chat history; an interrupted reply is kept only as far as the caller heard it."""

    system_prompt: str
    max_history_turns: int = 8
    greeting: str = ""
    _turns: list[tuple[str, str]] = field(default_factory=list)  # (user, assistant-as-heard)

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
        history = self._turns[-self.max_history_turns :] if self.max_history_turns else []
        for user, assistant in history:
            messages.append({"role": "user", "content": user})
            if assistant:
                messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": user_text})
        return messages

    def add_turn(self, user_text: str, heard_reply: str) -> None:
        self._turns.append((user_text, heard_reply))

    @property
    def turns(self) -> list[tuple[str, str]]:
        return list(self._turns)


def heard_part(text: str, fraction: float) -> str:
    """The words of ``text`` a caller heard when ``fraction`` of its audio played (whole words only)."""
    if fraction >= 1:
        return text
    words = text.split()
    return " ".join(words[: int(len(words) * max(0.0, fraction))])
