"""PDF (pypdf, a section per page) and DOCX (python-docx, headings by paragraph style, tables as rows).

Both are read from untrusted bytes: a DOCX's zip directory is checked before python-docx inflates anything, and a
PDF's page count before its pages are read. :func:`parley.knowledge.parsing.parse_document` turns what else
either library raises into a :class:`DocumentError`.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable
from typing import Any

from parley.knowledge.text_shapes import MarkdownWalk, paragraphs, row_text
from parley.knowledge.types import DocumentError, ParsedDocument, Section

MAX_PDF_PAGES = 2_000
#: a DOCX's parts, uncompressed, as its zip directory declares them (zipfile never inflates past a declared size)
MAX_DOCX_UNCOMPRESSED = 100_000_000
MAX_DOCX_PARTS = 5_000


def parse_pdf(data: bytes, title: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("the PDF is password-protected: upload it without a password")
        pages = len(reader.pages)
    except PdfReadError as exc:
        raise DocumentError(f"the PDF is broken or not a PDF ({exc})") from None
    except NotImplementedError as exc:  # an encryption algorithm pypdf does not know
        raise DocumentError(f"the PDF is encrypted in a way that cannot be read ({exc})") from None
    if pages > MAX_PDF_PAGES:
        raise DocumentError(f"the PDF has {pages} pages; at most {MAX_PDF_PAGES} are accepted")
    sections = []
    for n, page in enumerate(reader.pages, start=1):
        text = _pdf_page_text(page.extract_text() or "")
        if text:
            sections.append(Section(text, (), f"page {n}"))
    if not sections:
        raise DocumentError("the PDF has no text (scanned? OCR is not supported)")
    return ParsedDocument(_pdf_title(reader) or title, sections, "pdf")


def _pdf_title(reader: Any) -> str:
    try:
        return str(reader.metadata.title or "").strip() if reader.metadata else ""
    except Exception:  # a broken info dictionary: the file's name is the title
        return ""


def _pdf_page_text(text: str) -> str:
    """pypdf's lines, with words hyphenated across a line break joined again."""
    text = re.sub(r"(\w)-\n(\w)", r"\1\2", text.replace("\x00", ""))
    return paragraphs(text)


def _check_docx_zip(data: bytes) -> None:
    """Refuses a zip bomb before python-docx opens it: zipfile never inflates past the sizes checked here."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = {i.filename for i in infos}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DocumentError(f"the file is a broken zip, not a DOCX ({exc})") from None
    if "word/document.xml" not in names:
        raise DocumentError("the file is a zip archive but not a DOCX")
    if len(infos) > MAX_DOCX_PARTS or sum(i.file_size for i in infos) > MAX_DOCX_UNCOMPRESSED:
        raise DocumentError("the DOCX is too large once uncompressed (a zip bomb?)")


def parse_docx(data: bytes, title: str) -> ParsedDocument:
    _check_docx_zip(data)
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    walk = MarkdownWalk()  # its heading path and sections, fed from Word's paragraphs
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [_cell_texts(r.cells) for r in item.rows]
            if rows:
                walk.blocks.append("\n".join(row_text(rows[0], r) for r in rows[1:]) or " | ".join(rows[0]))
            continue
        text = item.text.strip()
        level = _docx_heading_level(item.style.name if item.style else "", item.style.style_id if item.style else "")
        if not text:
            continue
        if level == 0:
            walk.title = walk.title or text
        elif level is not None:
            walk.heading(level, text)
        else:
            walk.blocks.append(text)
    walk.flush()
    core_title = (document.core_properties.title or "").strip()
    return ParsedDocument(core_title or walk.title or title, walk.sections, "docx")


def _cell_texts(cells: Iterable[Any]) -> list[str]:
    """A merged cell is returned once per grid column it spans: it is read once."""
    out: list[Any] = []
    for cell in cells:
        if not out or cell._tc is not out[-1]._tc:
            out.append(cell)
    return [c.text for c in out]


def _docx_heading_level(name: str | None, style_id: str | None) -> int | None:
    """0 for "Title", N for "Heading N" (by style name or id, so a translated Word's built-in styles work too)."""
    for label in (name or "", style_id or ""):
        if label.strip().lower() == "title":
            return 0
        match = re.fullmatch(r"heading ?([1-9])", label.strip().lower())
        if match:
            return int(match.group(1))
    return None
