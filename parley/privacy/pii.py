"""Masks phone numbers, payment card numbers and email addresses in text before it is stored.

Rules, not a model: an email address by its shape; a card number as 13–19 digits (spaces or dashes between) that
pass the Luhn check, so an order number is not a card; a phone number as a run of at least 7 digits with the
separators people and speech-to-text write (``+1 (555) 010-0199``, ``555 0199 22``) — deliberately broad: a long
reference number read out is masked too, which errs on the side of the caller. Masks name the kind
(``[phone]``), so a transcript still reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{5,}\d(?!\w)")
MIN_PHONE_DIGITS = 7


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _luhn(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    return "[phone]" if len(re.sub(r"\D", "", match.group())) >= MIN_PHONE_DIGITS else match.group()


class PiiRedactor:
    """Masks the configured kinds; :meth:`value` walks JSON-like data (event payloads, analysis fields)."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = frozenset(kinds)
        steps: list[Callable[[str], str]] = []
        if "email" in self.kinds:
            steps.append(lambda s: EMAIL.sub("[email]", s))
        if "card" in self.kinds:  # before phones: a card number is also a long digit run
            steps.append(lambda s: CARD.sub(_card, s))
        if "phone" in self.kinds:
            steps.append(lambda s: PHONE.sub(_phone, s))
        self._steps = steps

    def __bool__(self) -> bool:
        return bool(self._steps)

    def text(self, value: str) -> str:
        for step in self._steps:
            value = step(value)
        return value

    def value(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {k: self.value(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.value(v) for v in data]
        return data
