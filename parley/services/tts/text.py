"""Cutting text into pieces a TTS engine can take one at a time.

An engine handed one huge text works on all of it at once (an espeak command line has a
size limit; piper phonemizes and infers a whole sentence before the first sample), so a
long text without sentence ends is cut at a word boundary, never longer than ``max_chars``.
The pieces are made lazily: however long the text, only one piece exists at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_SENTENCE_END = re.compile(r"(?<=[.!?…;:,])\s+|\n+")


def bounded_pieces(text: str, max_chars: int) -> Iterator[str]:
    """``text`` in order, as pieces of at most ``max_chars``, cut after a sentence (or clause) end when one is
    near, else at the last space, else anywhere."""
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            return
        end = min(n, pos + max_chars)
        if end < n:
            window = text[pos:end]
            cut = max((m.start() for m in _SENTENCE_END.finditer(window)), default=-1)
            if cut < max_chars // 2:  # no sentence end in the second half: the last space will do
                cut = max(cut, window.rfind(" "))
            if cut > 0:
                end = pos + cut
        piece = text[pos:end].strip()
        if piece:
            yield piece
        pos = end
