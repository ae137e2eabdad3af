"""Uploaded bytes to a :class:`ParsedDocument`: the format is recognised, then read into sections on its structure.

Formats: Markdown (markdown-it-py's token stream: headings, paragraphs, lists, tables, code), plain text, HTML
(BeautifulSoup drops the boilerplate, markdownify turns the rest into Markdown, which then takes the Markdown path,
so headings survive), PDF (pypdf, a section per page), DOCX (python-docx, headings by style) and CSV (a section per
row). The format is told by magic bytes first (``%PDF``, a zip holding ``word/document.xml``), then the file's
extension, then the content type, then a look at the bytes.

Hostile input must not take the process down: sizes are refused before parsing (20 MB, 2,000 PDF pages, a DOCX
whose declared uncompressed size is past 100 MB), and whatever a parser raises becomes a :class:`DocumentError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import structlog
from markdown_it import MarkdownIt

if TYPE_CHECKING:
    from bs4 import Tag

from parley.knowledge.text_shapes import MarkdownWalk, paragraphs, row_text
from parley.knowledge.types import DocumentError, ParsedDocument, Section

log = structlog.get_logger(__name__)

MAX_BYTES = 20_000_000

_EXTENSIONS = {
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".txt": "text", ".text": "text",
    ".html": "html", ".htm": "html", ".xhtml": "html", ".pdf": "pdf", ".docx": "docx", ".csv": "csv", ".tsv": "csv",
}  # fmt: skip
_CONTENT_TYPES = {
    "text/markdown": "markdown", "text/x-markdown": "markdown", "text/plain": "text", "text/html": "html",
    "application/xhtml+xml": "html", "application/pdf": "pdf", "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}  # fmt: skip
_UNSUPPORTED = {".doc": "a legacy Word .doc (save it as DOCX)", ".xls": "a spreadsheet (save it as CSV)",
                ".xlsx": "a spreadsheet (save it as CSV)", ".pptx": "a presentation", ".rtf": "RTF"}  # fmt: skip


def parse_document(data: bytes, filename: str, content_type: str | None = None) -> ParsedDocument:
    """Reads ``data`` (its name and content type help tell the format); DocumentError says why it cannot."""
    if len(data) > MAX_BYTES:
        raise DocumentError(f"the file is larger than {MAX_BYTES // 1_000_000} MB")
    if not data.strip():
        raise DocumentError("the file is empty")
    kind = detect_kind(data, filename, content_type)
    title = PurePosixPath(filename or "document").stem or "document"
    try:
        doc = _PARSERS[kind](data, title, _charset(content_type))
    except DocumentError:
        raise
    except Exception as exc:  # a parser's failure on hostile or broken input: the uploader is told, nothing crashes
        log.warning("knowledge_parse_failed", kind=kind, filename=filename, error=type(exc).__name__)
        raise DocumentError(f"cannot read the {kind.upper() if kind in ('pdf', 'docx', 'csv') else kind} file "
                            f"({type(exc).__name__})") from None  # fmt: skip
    sections = [s for s in doc.sections if s.text.strip()]
    if not sections:
        raise DocumentError("the document holds no text")
    return ParsedDocument(title=doc.title, sections=sections, kind=kind)


def detect_kind(data: bytes, filename: str, content_type: str | None) -> str:
    """The parser to use: magic bytes, then extension, then content type, then a look at the bytes."""
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    suffix = PurePosixPath((filename or "").lower()).suffix
    if head.startswith(b"PK\x03\x04"):
        if suffix in _UNSUPPORTED:
            raise DocumentError(f"{_UNSUPPORTED[suffix]} is not supported")
        return "docx"  # a zip that is not a DOCX is told so by the DOCX reader
    if suffix in _UNSUPPORTED:
        raise DocumentError(f"{_UNSUPPORTED[suffix]} is not supported")
    kind = _EXTENSIONS.get(suffix) or _CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if kind in ("pdf", "docx"):
        raise DocumentError(f"the file is not a valid {kind.upper()} (its first bytes are not a {kind.upper()}'s)")
    if kind:
        return kind
    if _looks_binary(data[:8192]):
        raise DocumentError("unsupported format: the file is neither text, Markdown, HTML, PDF, DOCX nor CSV")
    lowered = head.lstrip().lower()
    return "html" if lowered.startswith((b"<!doctype html", b"<html")) else "text"


def _looks_binary(sample: bytes) -> bool:
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in sample or sum(b < 9 or 13 < b < 32 for b in sample) > len(sample) // 20


def _charset(content_type: str | None) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Text from bytes: a BOM or the declared charset, else UTF-8, else charset-normalizer's guess, else latin-1."""
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    for declared in (charset, "utf-8"):
        if declared:
            try:
                return data.decode(declared)
            except (UnicodeDecodeError, LookupError):
                pass
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - installed with the service's HTTP stack
        return data.decode("latin-1")
    best = from_bytes(data[:1_000_000]).best()
    return data.decode(best.encoding, errors="replace") if best is not None else data.decode("latin-1")


# --- plain text ----------------------------------------------------------------------------------------------


def _parse_text(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    return ParsedDocument(title, [Section(paragraphs(decode_text(data, charset)))], "text")


# --- Markdown ------------------------------------------------------------------------------------------------


def markdown_sections(text: str) -> tuple[str, list[Section]]:
    """Markdown text to (its first H1, its sections)."""
    walk = MarkdownWalk()
    walk.walk(MarkdownIt("commonmark").enable("table").parse(text))
    sections = [_join_list_items(s) for s in walk.sections]
    return walk.title, sections


def _join_list_items(section: Section) -> Section:
    blocks = section.text.split("\n\n")
    out: list[str] = []
    for block in blocks:
        if out and _is_item(block) and _is_item(out[-1].rsplit("\n", 1)[-1]):
            out[-1] += "\n" + block
        else:
            out.append(block)
    return Section("\n\n".join(out), section.headings, section.locator)


def _is_item(line: str) -> bool:
    return re.match(r"\s*(-|\d+\.) ", line) is not None


def _parse_markdown(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    heading, sections = markdown_sections(decode_text(data, charset))
    return ParsedDocument(heading or title, sections, "markdown")


# --- HTML ----------------------------------------------------------------------------------------------------

_BOILERPLATE_TAGS = ("script", "style", "noscript", "template", "nav", "footer", "aside", "iframe", "svg",
                     "canvas", "button", "select", "object", "embed", "head")  # fmt: skip
_BOILERPLATE_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar")


def _is_boilerplate(tag: Tag) -> bool:
    return tag.get("role") in _BOILERPLATE_ROLES or tag.get("aria-hidden") == "true"


def _parse_html(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(data, "lxml", from_encoding=charset)
    page_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.find_all(_BOILERPLATE_TAGS):
        tag.decompose()
    for tag in soup.find_all(_is_boilerplate):
        tag.decompose()
    main = soup.find("main") or soup.find(role="main") or soup.body or soup
    converter = MarkdownConverter(heading_style="ATX", strip=["a", "img"], bullets="-", escape_misc=False)
    heading, sections = markdown_sections(converter.convert_soup(main))
    return ParsedDocument(page_title or heading or title, sections, "html")


# --- CSV -----------------------------------------------------------------------------------------------------


def _parse_csv(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    """A section per row, "Header: value; …", located "row N" as a spreadsheet numbers it (the header is row 1)."""
    text = decode_text(data, charset)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader, [])
        sections = [Section(row_text(header, row), (), f"row {reader.line_num}") for row in reader if any(row)]
    except csv.Error as exc:
        raise DocumentError(f"cannot read the CSV file: {exc}") from None
    if not sections and header:
        sections = [Section(row_text(header, header), (), "row 1")]
    return ParsedDocument(title, sections, "csv")


def _parse_pdf(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    from parley.knowledge.parsing_binary import parse_pdf

    return parse_pdf(data, title)


def _parse_docx(data: bytes, title: str, charset: str | None) -> ParsedDocument:
    from parley.knowledge.parsing_binary import parse_docx

    return parse_docx(data, title)


_PARSERS: dict[str, Callable[[bytes, str, str | None], ParsedDocument]] = {
    "markdown": _parse_markdown, "text": _parse_text, "html": _parse_html, "pdf": _parse_pdf,
    "docx": _parse_docx, "csv": _parse_csv,
}  # fmt: skip
