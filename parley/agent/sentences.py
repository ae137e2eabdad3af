"""Groups streamed LLM text into speakable pieces so TTS can start on the first one.

The first piece of a reply may be a clause (cut at a comma once it has enough
words), or, when the model writes a long first sentence, its first few words cut
at a word boundary: that piece is the audio the caller waits for, so it should be
short. Later pieces are whole sentences, which sound more natural. Markdown the model writes
(``**bold**``, ``# headings``, list bullets) is removed: a voice cannot say it.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "inc", "ltd", "mt",
}  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n+")
_CLAUSE_END = re.compile(r"[,;:—–](?=\s)")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*•]\s+|^\s*\d+\.\s+(?=\S)", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def clean_for_speech(text: str) -> str:
    """Strip markdown and collapse whitespace."""
    return _SPACES.sub(" ", _MARKDOWN.sub("", text)).strip()


class SentenceBuffer:
    """Feed text pieces, get back complete sentences (the first may be a clause)."""

    def __init__(self, first_clause_words: int = 3, min_words: int = 2, first_max_words: int = 0) -> None:
        self.first_clause_words = first_clause_words
        self.min_words = min_words
        self.first_max_words = first_max_words  # 0: never cut the first sentence between words
        self._buf = ""
        self._emitted = 0

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while (piece := self._next_piece()) is not None:
            out.append(piece)
        return out

    def flush(self) -> str | None:
        rest = clean_for_speech(self._buf)
        self._buf = ""
        if rest:
            self._emitted += 1
            return rest
        return None

    def reset(self) -> None:
        self._buf = ""
        self._emitted = 0

    def _next_piece(self) -> str | None:
        start = 0
        while m := _SENTENCE_END.search(self._buf, start):
            end = m.end()
            candidate = self._buf[:end]
            if self._is_abbreviation(candidate) or self._is_number_point(m.start()):
                start = end
                continue
            cleaned = clean_for_speech(candidate)
            if len(cleaned.split()) < self.min_words and m.group().strip():
                start = end  # too short to stand alone ("Hi." / "1."): join with the next
                continue
            self._buf = self._buf[end:]
            if cleaned:
                self._emitted += 1
                return cleaned
            start = 0
        if self._emitted == 0 and self.first_clause_words:
            for m in _CLAUSE_END.finditer(self._buf):
                cleaned = clean_for_speech(self._buf[: m.end()])
                if len(cleaned.split()) >= self.first_clause_words:
                    self._buf = self._buf[m.end() :]
                    self._emitted += 1
                    return cleaned
        if self._emitted == 0 and self.first_max_words:
            # words are complete only once followed by a space
            words = list(re.finditer(r"\S+(?=\s)", self._buf))
            if len(words) >= self.first_max_words:
                end = words[self.first_max_words - 1].end()
                cleaned = clean_for_speech(self._buf[:end])
                self._buf = self._buf[end:]
                self._emitted += 1
                return cleaned
        return None

    def _is_abbreviation(self, candidate: str) -> bool:
        words = candidate.rstrip().split()
        if not words:
            return False
        last = words[-1].rstrip(".").lower()
        return candidate.rstrip().endswith(".") and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()))

    def _is_number_point(self, pos: int) -> bool:
        """``3.5`` is not a sentence end: a digit on both sides of the point."""
        return (
            self._buf[pos] == "."
            and pos > 0
            and self._buf[pos - 1].isdigit()
            and pos + 1 < len(self._buf)
            and self._buf[pos + 1].isdigit()
        )
