"""Checkable claims in a sentence — numbers, prices, times, days, months and proper names — and the agent's
knowledge as clauses to check them against.

A small embedded model states wrong facts fluently ("A filling costs 60 dollars" when 60 is the cleaning's price,
"Dr. John Doe", "open on Sundays" when the prompt says closed). Such errors are concrete: a number, a day or a
name said about something. This module finds those claims and decides whether the knowledge supports them: a
claim is supported when one clause of the knowledge holds the same claim *about the same things* (the reply's
known content words are in that clause) with the same polarity (open/closed, is/is not). Words the knowledge
never uses are paraphrase and are ignored; what matters is that a known number is not moved onto another known
thing. It is deliberately lexical and language-light (English words for numbers, days and negation): it guards
claims, it does not understand sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = tuple(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
_DAY_GROUPS = {"weekday": DAYS[:5], "weekdays": DAYS[:5], "weekend": DAYS[5:], "weekends": DAYS[5:]}
_UNIT_WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_UNITS = {w: i for i, w in enumerate(f"{_UNIT_WORDS} seventeen eighteen nineteen".split(), start=1)}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_NEGATIONS = {"not", "no", "never", "closed", "cannot", "without", "unavailable", "none", "nobody"}
_TITLES = {"dr", "mr", "mrs", "ms", "prof", "doctor"}
#: words that carry no checkable meaning of their own (function words, chat, units of the claims themselves)
STOPWORDS = frozenset(
    """a an the and or but if of at by for with about to from in on off up down out over under into onto is are was
    were be been being am pm do does did doing have has had having i me my we our us you your he she it its they
    them their this that these those there here what which who whom whose when where why how can could will would
    shall should may might must yes yeah ok okay sure hi hello hey please thanks thank so just also too very really
    much many more most some any all each every other than then now today tomorrow tonight week day days time times
    like want need get got go going come coming know tell let make see say said also well oh um uh guys anything
    something everything nothing one ones dollar dollars usd euro euros cent cents price cost costs o'clock oclock
    hour hours open opening take help bad good great not no never closed close bit lot again don isn aren wasn
    doesn didn won wouldn couldn shouldn haven hasn let's""".split()  # noqa: SIM905 (a word list reads better as text)
)
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")
_CLAUSE_END = re.compile(r"(?<!\b[DdMm]r)(?<!\bMrs)(?<!\bMs)(?<!\bSt)[.!?;]+(?=\s|$)|\n+")
_ANY_DAY = "(" + "|".join(DAYS) + ")"
_DAY_RANGE = re.compile(rf"\b{_ANY_DAY}s?\s*(?:to|through|thru|until|till|-|–|—)\s*{_ANY_DAY}s?\b", re.IGNORECASE)
_TIME = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_MONEY = re.compile(r"[$€£](\d)")
_NUMBER_WORDS = re.compile(r"\b(" + "|".join(_TENS) + r")[- ](" + "|".join(list(_UNITS)[:9]) + r")\b")


@dataclass(frozen=True)
class Claims:
    """What a piece of text asserts that can be checked: normalised tokens, and its content words."""

    facts: frozenset[str]  # "n:80", "day:sunday", "month:may", "name:smith"
    words: frozenset[str]  # stems of content words (not stopwords, not claims)
    negative: bool  # says something is closed / not so
    authoritative: bool = False  # from the agent's own prompt (not the conversation)

    @property
    def empty(self) -> bool:
        return not self.facts


def stem(word: str) -> str:
    """A crude English stem, enough to meet "fillings"/"filling", "opening"/"open", "costs"/"cost"."""
    w = word.replace("’", "'").split("'")[0]
    for suffix in ("ings", "ing", "ies", "es", "s", "ed"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            w = w[: -len(suffix)]
            return w + "y" if suffix == "ies" else w
    return w


def _normalise(text: str) -> str:
    text = _TIME.sub(lambda m: _clock(m.group(1), m.group(2)), text)
    text = _MONEY.sub(r"\1", text)
    text = _NUMBER_WORDS.sub(lambda m: str(_TENS[m.group(1).lower()] + _UNITS[m.group(2).lower()]), text)
    return _DAY_RANGE.sub(lambda m: " ".join(_day_span(m.group(1).lower(), m.group(2).lower())), text)


def _clock(hours: str, minutes: str) -> str:
    h = int(hours)
    h = h - 12 if h > 12 else h
    return f"{h}" if minutes == "00" else f"{h} {int(minutes)}"


def _day_span(first: str, last: str) -> list[str]:
    i, j = DAYS.index(first), DAYS.index(last)
    return [DAYS[(i + k) % 7] for k in range((j - i) % 7 + 1)]


def claims_of(text: str) -> Claims:
    """The checkable claims in ``text`` (one clause or sentence)."""
    raw = _normalise(text).split()
    facts: set[str] = set()
    words: set[str] = set()
    negative = False
    for i, token in enumerate(raw):
        for w in _WORD.findall(token.lower()):
            facts |= _facts_of(w, raw, i)
            negative = negative or w in _NEGATIONS or w.endswith("n't")
            s = stem(w)
            if w not in STOPWORDS and s not in STOPWORDS and not w.isdigit() and w not in _TENS and w not in _UNITS:
                words.add(s)
    return Claims(frozenset(facts), frozenset(words), negative)


def _facts_of(w: str, raw: list[str], i: int) -> set[str]:
    """The claims one word ``w`` of token ``raw[i]`` makes: a number, a day (or days), a month or a name."""
    if w.isdigit():
        return {f"n:{int(w)}"}
    if w in _TENS or (w in _UNITS and w != "one"):
        return {f"n:{_TENS.get(w) or _UNITS[w]}"}
    if w == "one":  # "one" is a number only as a time ("one pm"): "the one behind" claims nothing
        following = raw[i + 1].lower().strip(".,!?") if i + 1 < len(raw) else ""
        return {"n:1"} if following in {"am", "pm", "o'clock"} else set()
    if w in DAYS or (w.endswith("s") and w[:-1] in DAYS):
        return {f"day:{w.removesuffix('s') if w not in DAYS else w}"}
    if w in _DAY_GROUPS:
        return {f"day:{d}" for d in _DAY_GROUPS[w]}
    if w in MONTHS and (w != "may" or (i > 0 and raw[i][:1].isupper())):
        return {f"month:{w}"}
    if not _is_name(raw, i, raw[i]):
        return set()
    return {"name:" + w.removesuffix("'s").removesuffix("’s")}  # "Dental's" is the name "Dental"


def _is_name(raw: list[str], i: int, token: str) -> bool:
    """A capitalised word inside a sentence (not its first word, not "I"), or any word after a title."""
    if i == 0 or not token[:1].isupper() or token.strip(".,!?;:\"'") in {"I", "I'm", "I'll", "I've", "I'd"}:
        return i > 0 and raw[i - 1].lower().strip(".") in _TITLES
    before = raw[i - 1]
    return not before.endswith((".", "!", "?", ":", '"')) or before.lower().strip(".") in _TITLES


def clauses(text: str) -> list[str]:
    """Split into clauses at sentence ends, semicolons and line breaks (not commas: "Monday to Friday, 8 to 6")."""
    return [c.strip(" -*•\t") for c in _CLAUSE_END.split(text) if c and c.strip(" -*•\t")]


@dataclass
class Knowledge:
    """What the agent may state: its prompt, the conversation so far and the caller's words, as clauses.

    The prompt is authoritative: a claim it contradicts (the same day or number with the other polarity) is never
    backed, even when the caller said it ("Are you open on Sunday?" does not back "we're open on Sunday"). A
    clause under a heading ("Opening hours: Monday to Friday, 8 am to 6 pm; Saturday 9 to 1") also carries the
    heading's words, so "open on Saturday" meets "Saturday 9 am to 1 pm".
    """

    items: list[Claims] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vocabulary: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    _name_words: set[str] = field(default_factory=set)  # "dental" of "Bright Smile Dental": says nothing of a topic

    @classmethod
    def of(cls, prompt: Iterable[str], conversation: Iterable[str] = ()) -> Knowledge:
        k = cls()
        for text in prompt:
            k.add(text, authoritative=True)
        for text in conversation:
            k.add(text)
        return k

    def add(self, text: str, authoritative: bool = False) -> None:
        for line in text.splitlines():
            heading, _, rest = line.partition(":") if ":" in line[:40] else ("", "", line)
            head = claims_of(heading).words if heading else frozenset()
            for clause in clauses(rest if heading else line):
                c = claims_of(clause)
                self.items.append(Claims(c.facts, c.words | head, c.negative, authoritative))
                self.texts.append(f"{heading.strip(' -*')}: {clause}" if heading else clause)
                if authoritative:  # the topics the agent knows about; the caller's words do not add any
                    self.vocabulary |= c.words | head
                    self._name_words |= {f[5:] for f in c.facts if f.startswith("name:")}
        self.names |= {w.lower() for w in _WORD.findall(text.lower())}

    @property
    def topics(self) -> set[str]:
        """The content words the prompt uses for what it knows (the business's own name says nothing of a topic)."""
        return self.vocabulary - self._name_words

    def knows_about(self, words: Iterable[str]) -> bool:
        return any(w in self.topics for w in words)

    def supports(self, part: Claims, context: frozenset[str] = frozenset()) -> bool:
        """Whether one clause (or two, for a sum such as "80 and 60 is 140") backs every claim in ``part``.

        ``context`` is the content words of the rest of the sentence and of the question, used when the part
        itself names nothing ("It's 80 dollars").
        """
        about = self._about(part, context)
        names = {f for f in part.facts if f.startswith("name:")}
        if any(f[5:] not in self.names for f in names):
            return False
        need = part.facts - names
        if not need:
            return True
        about_it = [k for k in self.items if k.authoritative and about <= k.words and need <= k.facts]
        if any(k.negative != part.negative for k in about_it):
            return False
        if about_it or any(need <= k.facts for k in self.items if not k.authoritative):
            return True  # the prompt says so, or the caller did ("next Tuesday", "555 0134")
        return self._sum_supports(need, about, part.negative)

    def contradiction(self, part: Claims, context: frozenset[str] = frozenset()) -> str | None:
        """The prompt's clause that says the opposite of ``part`` ("closed on Sunday" for "open on Sunday")."""
        about = self._about(part, context)
        need = {f for f in part.facts if not f.startswith("name:")}
        for text, k in zip(self.texts, self.items, strict=True):
            if need and k.authoritative and k.negative != part.negative and about <= k.words and need <= k.facts:
                return text
        return None

    def _about(self, part: Claims, context: frozenset[str]) -> set[str]:
        topics = self.topics
        return {w for w in part.words if w in topics} or {w for w in context if w in topics}

    def _sum_supports(self, need: frozenset[str], about: set[str], negative: bool) -> bool:
        numbers = {f for f in need if f.startswith("n:")}
        if len(numbers) != 1 or need - numbers:
            return False
        total = int(next(iter(numbers))[2:])
        same = [k for k in self.items if k.negative == negative]
        values = [(int(f[2:]), k) for k in same for f in k.facts if f.startswith("n:")]
        pairs = ((a, ka, b, kb) for a, ka in values for b, kb in values if ka is not kb)
        return any(a + b == total and about <= (ka.words | kb.words) for a, ka, b, kb in pairs)

    def relevant(self, question: str, limit: int = 2) -> list[str]:
        """The clauses most about ``question``: shared days/numbers, the kind of answer it asks for (a price or a
        time wants a clause with a number or a day), then shared content words."""
        q = claims_of(question)
        topic = q.words - self._name_words
        wants = _wanted(question)
        scored = []
        for text, k in zip(self.texts, self.items, strict=True):
            if not k.authoritative:
                continue
            shared = {f for f in q.facts & k.facts if not f.startswith("name:")}
            kinds = {f.split(":")[0] for f in k.facts}
            matched = len(topic & k.words)
            score = 2 * len(shared) + matched + (2 if wants & kinds and (matched or shared) else 0)
            if score:
                scored.append((score, text))
        scored.sort(key=lambda s: -s[0])
        return [t for _, t in scored[:limit]]


_ASKS_PRICE = re.compile(r"\b(how much|cost|price|pay|fee|charge|expensive|cheap)", re.IGNORECASE)
_ASKS_TIME = re.compile(r"\b(when|what time|how late|how early|until|open|close|hours)\b", re.IGNORECASE)


def _wanted(question: str) -> set[str]:
    """The kinds of claim an answer to ``question`` holds: ``{"n"}`` for a price, ``{"n", "day"}`` for a time."""
    wants = {"n"} if _ASKS_PRICE.search(question) else set()
    return wants | {"n", "day"} if _ASKS_TIME.search(question) else wants
