"""Transcript cues about whether a caller has finished: a second signal beside Smart Turn.

The speculative transcript of the first pause is read with a few rules of English
grammar, not with a list of expected sentences:

* **unfinished** — the phrase cannot end there: a trailing conjunction, preposition,
  article or possessive ("…an appointment for", "…cancel my"); a subject pronoun
  ("…and I"); a modal and its subject ("Could you", "Can I"); a verb that still needs
  its object ("tell me", "give us"; "I'd like", "I was wondering" at the start of a
  clause; a request's auxiliary, subject and verb, "Could I get", "Do you have"; a question's
  quantifier, "Do you have any"; an infinitive's "to" without its verb, even in a wh-question, "What would
  you like to"); a filler ("um"); or a number being dictated that is shorter than a phone
  number ("my number is 555").
* **dictating** — the transcript ends in a spoken number (digits, or a number word
  before them): the caller may go on, so the judge never shortens the wait.
* **finished** — weak evidence only: the transcript is a sentence with final
  punctuation and nothing above fires. Whisper punctuates fragments too, so this
  never outweighs the model's confident "not finished".
"""

from __future__ import annotations

import re

_CONJUNCTIONS = "and or but because than if whether although though unless while whereas nor"
_PREPOSITIONS = "for to of with at on in from by about into onto towards toward through between without under over"
_DETERMINERS = "the a an my your our his their its every"  # not "her", "some", "any", "no": they can end one
_FILLERS = "uh um er erm uhm hmm like"


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_OPEN_ENDINGS = _set(f"{_CONJUNCTIONS} {_PREPOSITIONS} {_DETERMINERS} {_FILLERS}")
_COPULAS = _set("is are was were am be been")
_SUBJECTS = _set("i we he she they")  # nominative: a clause cannot end on one
_PRONOUNS = _SUBJECTS | _set("you it there that this who what which where here")
_MODALS = _set("can could would will shall should may might must")
_PARTICLES = _set("in on by at over")  # "come in", "hold on", "drop by": phrasal verbs end there
_PHRASAL = _set("come came hold go log logged check checked sign signed carry stop drop dropped hang pop walk hop get")
_WH = _set("what who whom which where when why how")
_AUXILIARIES = _MODALS | _set("do does did")
# verbs a request leaves waiting for their object: "Could I get…", "Do you have…", "Can we move…"
_NEEDS_OBJECT = _set("get have book make schedule move change cancel send bring find take order reschedule use leave")
_QUANTIFIERS = _set("any some another")  # "Do you have any…", "Are there any…": a question stops before its noun
# verbs that leave their object still to come: "could you tell me", "give us"
_DITRANSITIVE = re.compile(r"\b(tell|give|show|send|bring|let|email|text|offer|pass|find)\s+(me|us|him|her|them)$")
# "I'd like", "we were wondering", "I need": a clause opening on its subject and stopping at its verb
_WANTS = re.compile(
    r"(?:^|\b(?:and|but|so|well|yes|yeah|no|hi|hello|okay|ok|oh|um|uh|now)\s+)"
    r"(?:i|we)(?:'d|'m|'re|'ve|\s+(?:would|was|were|am|are|just|really|also|do|did|have|had|still))*\s+"
    r"(?:want|wanted|need|needed|like|love|wonder|wondering|hope|hoping|trying|planning|looking|wish|meant|mean)$"
)
# a wh-question strands a preposition ("who am I speaking to?") but not an infinitive's "to": "what would you
# like to", "what will I be able to" still need their verb ("where are you going to?" is a place: not listed)
_WH_INFINITIVE = _set("able like love want wants wanted need needs needed have has supposed ought try trying hoping")
_NUMBER_WORDS = re.compile(r"\b(number|phone|mobile|cell|digits|code|zip|postcode|account|card|extension|pin)\b")
_DIGITS = {w: str(i) for i, w in enumerate(re.findall(r"\w+", "zero one two three four five six seven eight nine"))}
_DIGITS["oh"] = "0"
_DIGIT_WORDS = re.compile(r"\b(" + "|".join(_DIGITS) + r")\b")
_TRAILING_DIGITS = re.compile(r"(?:\d[\d\s\-.,]*)$")


def _normalise(text: str) -> str:
    """Lower case, spoken digits as digits, final punctuation gone."""
    t = _DIGIT_WORDS.sub(lambda m: _DIGITS[m.group()], text.strip().lower())
    return t.rstrip(" .,!?…-;:")


def _number(t: str) -> tuple[int, int] | None:
    """(digits, groups) of the number ``t`` ends with, when the caller is dictating one."""
    m = _TRAILING_DIGITS.search(t)
    if not m:
        return None
    groups = re.findall(r"\d+", m.group())
    n = sum(len(g) for g in groups)
    single_digits = len(groups) >= 3 and all(len(g) == 1 for g in groups)  # "five five five": dictation
    if _NUMBER_WORDS.search(t) or single_digits or (n >= 3 and len(groups) >= 2):
        return n, len(groups)
    return None


def dictating(text: str) -> bool:
    """True when ``text`` ends in a number the caller is dictating (a phone number, a code)."""
    return _number(_normalise(text)) is not None


def _open_ending(words: list[str], first: str) -> bool:
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if last in _COPULAS:  # "my name is" goes on; "yes it is", "here you are" do not
        return before not in _PRONOUNS
    if last in _SUBJECTS:  # "…and I"
        return True
    if before in _MODALS and last in _SUBJECTS | {"you"}:  # "Could you", "Can I"
        return first not in _WH or len(words) <= 3
    if _request_stops_at_verb(words, first) or (last in _QUANTIFIERS and first in _AUXILIARIES | _COPULAS):
        return True
    if last not in _OPEN_ENDINGS:
        return False
    if last in _PARTICLES and before in _PHRASAL:  # "can I come in", "hold on"
        return False
    if first in _WH and last in _PREPOSITIONS:  # "what is it for", "who am I speaking to"
        return last == "to" and before in _WH_INFINITIVE  # … but "what would you like to" has no verb yet
    return True


def _request_stops_at_verb(words: list[str], first: str) -> bool:
    """ "Could I get", "Do you have": an auxiliary, its subject and a verb whose object has not come yet (not in a
    wh-question, where the wh-word is the object: "What do you have?")."""
    if len(words) < 3 or first in _WH:
        return False
    aux, subject, verb = words[-3:]
    return aux in _AUXILIARIES and subject in _SUBJECTS | {"you"} and verb in _NEEDS_OBJECT


def _grammar(clause: str) -> bool:
    return bool(_DITRANSITIVE.search(clause) or _WANTS.search(clause))


def sounds_unfinished(text: str) -> bool:
    """True when ``text`` clearly stops mid-phrase (see the module's rules)."""
    if text.rstrip().endswith(("...", "…", "-", ",")):
        return True
    t = _normalise(text)
    if not t:
        return False
    words = re.findall(r"[a-z']+|\d+", t)
    clause = re.split(r"[,.;!?]", t)[-1].strip() or t
    if words and words[-1].isalpha() and (_open_ending(words, words[0]) or _grammar(clause)):
        return True
    number = _number(t)
    if number is not None:
        n, _ = number
        return n < 7 or n in (8, 9)  # a phone number has 7 (local) or 10+ digits
    return False


def sounds_finished(text: str) -> bool:
    """Weak evidence of a whole turn: a punctuated sentence that no unfinished rule catches."""
    stripped = text.strip()
    return (
        bool(re.search(r"[a-z0-9]", stripped.lower()))
        and stripped.endswith((".", "?", "!"))
        and not (stripped.endswith("...") or sounds_unfinished(stripped))
    )
