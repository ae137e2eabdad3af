"""Text shapes the parsers share: paragraphs, table rows as "Header: value" lines, and markdown-it's token stream
folded into sections (Markdown and HTML use it directly, DOCX its rows and paragraphs)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from markdown_it.token import Token

from parley.knowledge.types import Section


def paragraphs(text: str) -> str:
    """Blank-line separated paragraphs, each on one line's worth of whitespace (a chunk boundary is a blank line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    paras = (re.sub(r"[ \t\f\v]+", " ", p).strip() for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paras if p)


def _inline_text(token: Token) -> str:
    out: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline", "html_inline"):
            out.append(child.content)
        elif child.type == "softbreak":
            out.append(" ")
        elif child.type == "hardbreak":
            out.append("\n")
        elif child.type == "image":
            out.append(child.content)  # its alt text
    return "".join(out).strip()


class MarkdownWalk:
    """Folds markdown-it's flat token stream into sections: one per heading, its blocks separated by blank lines."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.blocks: list[str] = []
        self.title = ""
        self.lists: list[int] = []  # the open lists: 0 for bullets, else the next ordered number
        self.row: list[str] = []
        self.header: list[str] = []
        self.rows: list[str] = []
        self.in_cell = False
        self.mark = ""  # a list item's mark, until its first line is written

    def flush(self) -> None:
        if self.blocks:
            self.sections.append(Section("\n\n".join(self.blocks), tuple(t for _, t in self.path)))
            self.blocks = []

    def walk(self, tokens: list[Token]) -> None:
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if token.type == "heading_open":
                self.heading(int(token.tag[1:]), _inline_text(tokens[i + 1]))
                i += 2
            elif token.type == "inline":
                self.inline(token)
            elif token.type in ("fence", "code_block") and token.content.strip():
                self.blocks.append(token.content.rstrip())
            elif token.type in ("bullet_list_open", "ordered_list_open"):
                self.lists.append(int(token.attrs.get("start", 1) or 1) if token.type == "ordered_list_open" else 0)
            elif token.type in ("bullet_list_close", "ordered_list_close"):
                self.lists.pop()
            elif token.type == "list_item_open":
                self.list_item()
            else:
                self.table(token)
            i += 1
        self.flush()

    def heading(self, level: int, text: str) -> None:
        self.flush()
        self.title = self.title or (text if level == 1 else "")
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        if text:
            self.path.append((level, text))

    def inline(self, token: Token) -> None:
        text = _inline_text(token)
        if self.in_cell:
            self.row.append(text)
        elif text and self.lists:
            indent = "  " * (len(self.lists) - 1)
            self.blocks.append(f"{indent}{self.mark} {text}" if self.mark else f"{indent}  {text}")
            self.mark = ""
        elif text:
            self.blocks.append(text)

    def list_item(self) -> None:
        number = self.lists[-1] if self.lists else 0
        self.mark = f"{number}." if number else "-"
        if number:
            self.lists[-1] += 1

    def table(self, token: Token) -> None:
        if token.type in ("th_open", "td_open"):
            self.in_cell = True
        elif token.type in ("th_close", "td_close"):
            self.in_cell = False
        elif token.type == "tr_open":
            self.row = []
        elif token.type == "tr_close":
            if not self.header:
                self.header = self.row
            else:
                self.rows.append(row_text(self.header, self.row))
        elif token.type == "table_close":
            self.blocks.append("\n".join(r for r in self.rows if r) or " | ".join(self.header))
            self.header, self.rows = [], []


def row_text(header: Iterable[str], cells: Iterable[str]) -> str:
    """A table row as "Header: value; Header: value" (empty cells left out), so each value keeps its column."""
    header = list(header)
    parts = []
    for n, cell in enumerate(cells):
        cell = " ".join(str(cell).split())
        if cell:
            name = header[n].strip() if n < len(header) and header[n].strip() else f"column {n + 1}"
            parts.append(f"{name}: {cell}")
    return "; ".join(parts)
