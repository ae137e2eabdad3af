"""Groups streamed LLM text into speakable pieces so TTS can start on the first one.

The first piece of a reply may be a clause (cut at a comma once it has enough
words), or, when the model writes a long first sentence, its first few words cut
at a word boundary: that piece is the audio the caller waits for, so it should be
short. Later pieces are whole sentences, which sound more natural. Markdown the model writes
(``**bold**``, ``# headings``, list bullets) is removed: a voice cannot say it.
"""

from __future__ import annotations

import itertools
import re

_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sr",
    "jr",
    "st",
    "vs",
    "etc",
    "e.g",
    "i.e",
    "no",
    "approx",
    "inc",
    "ltd",
    "mt",
}
# Every pattern here runs on text of any length (a greeting, a model's reply): each is linear in it, with
# possessive quantifiers and look-behinds so that a run of "!!!…", newlines or one endless word is not
# re-scanned from each of its characters (which made 20,000 characters take seconds).
_SENTENCE_END = re.compile(r"(?<![.!?…])[.!?…]++[\"')\]]*+(?=\s)|\n++")
_CLAUSE_END = re.compile(r"[,;:—–](?=\s)")
_MARKDOWN = re.compile(r"\*\*|__|`++|^#++\s*+|^[ \t]*+[-*•]\s++|^[ \t]*+\d++\.\s++(?=\S)", re.MULTILINE)
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"(?<!\S)\S++(?=\s)")  # a word, complete once followed by a space
_LONGEST_ABBREVIATION = 8
_END_MARKS = ".!?…\"')]"
_LONGEST_END = 32  # end marks and closing quotes in a row that can still end a sentence ("?!…")
#: a piece never grows longer: text without a sentence end is cut at a word, so each scan of the buffer
#: stays short however long (or however finely streamed) the text is, and TTS gets bounded pieces
MAX_PIECE_CHARS = 1000


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
        self._scan = 0  # where the search for a sentence end resumes: the text before it has none

    def feed(self, text: str) -> list[str]:
        out: list[str] = []
        for i in range(0, len(text), MAX_PIECE_CHARS):  # a long text goes in bounded steps
            self._buf += text[i : i + MAX_PIECE_CHARS]
            while (piece := self._next_piece()) is not None:
                out.append(piece)
            while len(self._buf) > MAX_PIECE_CHARS:
                if piece := self._cut(MAX_PIECE_CHARS):
                    out.append(piece)
            if len(self._buf) > 2 and self._buf.isspace():  # nothing to say in it: no need to scan it again
                self._buf, self._scan = self._buf[-2:], 0  # (a line start either way, for the markdown)
        return out

    def _cut(self, limit: int) -> str:
        """The buffer's first ``limit`` characters at most, cut after its last space in them."""
        end = max(self._buf.rfind(" ", 0, limit), self._buf.rfind("\n", 0, limit)) + 1 or limit
        cleaned = clean_for_speech(self._buf[:end])
        self._buf, self._scan = self._buf[end:], 0
        if cleaned:
            self._emitted += 1
        return cleaned

    def flush(self) -> str | None:
        rest = clean_for_speech(self._buf)
        self._buf, self._scan = "", 0
        if rest:
            self._emitted += 1
            return rest
        return None

    def _next_piece(self) -> str | None:
        start = self._scan
        while m := _SENTENCE_END.search(self._buf, start):
            end = m.end()
            if self._is_abbreviation(end) or self._is_number_point(m.start()):
                start = end
                continue
            candidate = self._buf[:end]
            cleaned = clean_for_speech(candidate)
            if len(cleaned.split()) < self.min_words and m.group().strip():
                start = end  # too short to stand alone ("Hi." / "1."): join with the next
                continue
            self._buf, self._scan = self._buf[end:], 0
            if cleaned:
                self._emitted += 1
                return cleaned
            start = 0
        self._scan = max(start, self._open_end())
        if self._emitted == 0 and self.first_clause_words:
            for m in _CLAUSE_END.finditer(self._buf):
                cleaned = clean_for_speech(self._buf[: m.end()])
                if len(cleaned.split()) >= self.first_clause_words:
                    self._buf, self._scan = self._buf[m.end() :], 0
                    self._emitted += 1
                    return cleaned
        if self._emitted == 0 and self.first_max_words:
            # words are complete only once followed by a space
            words = list(itertools.islice(_WORD.finditer(self._buf), self.first_max_words))
            if len(words) >= self.first_max_words:
                end = words[self.first_max_words - 1].end()
                cleaned = clean_for_speech(self._buf[:end])
                self._buf, self._scan = self._buf[end:], 0
                self._emitted += 1
                return cleaned
        return None

    def _open_end(self) -> int:
        """Where a sentence end may still start: only a run of end marks at the very end of the text can
        become one once a space follows (a run longer than a sentence end ever is counts as none)."""
        tail = self._buf[-_LONGEST_END - 1 :]
        run = len(tail) - len(tail.rstrip(_END_MARKS))
        return len(self._buf) - (run if run <= _LONGEST_END else 0)

    def _is_abbreviation(self, end: int) -> bool:
        """Whether the text before ``end`` ends with "Dr." or "A." (looking back a few characters only)."""
        buf, j = self._buf, end
        while j > 0 and buf[j - 1].isspace():
            j -= 1
        if j == 0 or buf[j - 1] != ".":
            return False
        k = j
        while k > 0 and not buf[k - 1].isspace():
            k -= 1
            if j - k > _LONGEST_ABBREVIATION:
                return False
        last = buf[k:j].rstrip(".").lower()
        return last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())

    def _is_number_point(self, pos: int) -> bool:
        """``3.5`` is not a sentence end: a digit on both sides of the point."""
        return (
            self._buf[pos] == "."
            and pos > 0
            and self._buf[pos - 1].isdigit()
            and pos + 1 < len(self._buf)
            and self._buf[pos + 1].isdigit()
        )
