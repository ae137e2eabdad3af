"""Transcript cues that a caller has not finished: a second signal beside Smart Turn.

A phrase that ends on a conjunction, a preposition or an article ("…an appointment
for", "…and") cannot be a whole turn; nor can a phone number that has fewer digits
than a phone number has. These are cheap, certain-when-they-fire checks on the
speculative transcript; when they do not fire they say nothing.
"""

from __future__ import annotations

import re

_WORDS = """and or but so because for to of with at on in from by about into the a an my your our his her their
is are was were am be been this that these those if when than then like uh um er erm"""
_OPEN_ENDINGS = frozenset(_WORDS.split())
_NUMBER_WORDS = re.compile(r"\b(number|phone|mobile|cell|digits|code|zip|postcode|account|card)\b")
_DIGITS = {w: str(i) for i, w in enumerate(re.findall(r"\w+", "zero one two three four five six seven eight nine"))} | {
    "oh": "0"
}
_DIGIT_WORDS = re.compile(r"\b(" + "|".join(_DIGITS) + r")\b")
_TRAILING_DIGITS = re.compile(r"(?:\d[\d\s\-.,]*)$")


def sounds_unfinished(text: str) -> bool:
    """True when ``text`` clearly stops mid-phrase (trailing function word or a partial phone number)."""
    t = _DIGIT_WORDS.sub(lambda m: _DIGITS[m.group()], text.strip().lower()).rstrip(" .,!?…-")
    if not t:
        return False
    if text.rstrip().endswith(("...", "…", "-", ",")):
        return True
    last = re.findall(r"[a-z']+|\d+", t)
    if last and last[-1] in _OPEN_ENDINGS:
        return True
    digits = _TRAILING_DIGITS.search(t)
    if digits and _NUMBER_WORDS.search(t):
        n = sum(c.isdigit() for c in digits.group())
        return n < 7 or n in (8, 9)  # a phone number has 7 (local) or 10+ digits
    return False
