"""Knowledge documents from real files made by real writers (fpdf2, pypdf, python-docx, csv), chunked with the
embedding model's own token counts, and fetched from a real local HTTP server through the SSRF guard."""

from __future__ import annotations

import csv
import io
import itertools
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from parley.knowledge.chunking import MODEL_MAX_TOKENS, chunk_document, estimate_tokens, model_token_count
from parley.knowledge.fetching import fetch_url
from parley.knowledge.parsing import parse_document
from parley.knowledge.types import DocumentError, ParsedDocument, Section
from parley.net.ssrf import OutboundPolicy

HINDI = "भारत एक विशाल देश है जिसमें अनेक भाषाएँ बोली जाती हैं और हर राज्य की अपनी संस्कृति है। "
CHINESE = "这是一个关于退款政策和运输时间的详细说明，请在购买前仔细阅读。"


def _pdf(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    return bytes(pdf.output())


def _docx(*, bomb: bool = False) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Clinic handbook", 0)
    document.add_heading("Opening hours", 1)
    document.add_paragraph("We are open on weekdays from nine to five.")
    document.add_heading("Holidays", 2)
    document.add_paragraph("Closed on public holidays.")
    document.add_heading("Prices", 1)
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Service", "Price"), ("Check-up", "40 EUR"), ("X-ray", "90 EUR")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    out = io.BytesIO()
    document.save(out)
    if not bomb:
        return out.getvalue()
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as archive, archive.open("word/media/zeros.bin", "w") as f:
        block = bytes(1 << 20)
        for _ in range(110):  # 110 MB of zeros: about 110 KB compressed
            f.write(block)
    return out.getvalue()


# --- formats -------------------------------------------------------------------------------------------------


def test_markdown_nested_headings_lists_and_tables() -> None:
    text = (
        "# Guide\n\nIntro with **bold** and a [link](https://example.com).\n\n## Setup\n\n"
        "1. first\n2. second\n\n| Plan | Price |\n|---|---|\n| Basic | 10 |\n| Pro | 20 |\n\n"
        "### Deep\n\n```\ncode line\n```\n\n# Other\n\nEnd."
    )
    doc = parse_document(text.encode(), "guide.md")
    assert (doc.kind, doc.title) == ("markdown", "Guide")
    by_path = {s.headings: s.text for s in doc.sections}
    assert by_path[("Guide",)] == "Intro with bold and a link."
    assert by_path[("Guide", "Setup")] == "1. first\n2. second\n\nPlan: Basic; Price: 10\nPlan: Pro; Price: 20"
    assert by_path[("Guide", "Setup", "Deep")] == "code line"
    assert by_path[("Other",)] == "End."


def test_html_drops_boilerplate_and_keeps_headings() -> None:
    page = b"""<!doctype html><html><head><title>Help centre</title><style>p{color:red}</style>
    <script>track('visit')</script></head><body><nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
    <div role="banner">Site banner</div><main><h1>Returns</h1><p>Send items back within <b>30 days</b>.</p>
    <h2>Refunds</h2><ul><li>Card: 5 days</li><li>Cash: at once</li></ul></main>
    <footer>Copyright 2026 Example Ltd</footer><script>more()</script></body></html>"""
    doc = parse_document(page, "help", "text/html; charset=utf-8")
    assert (doc.kind, doc.title) == ("html", "Help centre")
    text = " ".join(s.text for s in doc.sections)
    for boilerplate in ("track", "Home", "About us", "Copyright", "banner", "color"):
        assert boilerplate not in text
    assert doc.sections[0] == Section("Send items back within 30 days.", ("Returns",))
    assert doc.sections[1] == Section("- Card: 5 days\n- Cash: at once", ("Returns", "Refunds"))


def test_plain_text_with_bom_and_hindi_and_a_legacy_charset() -> None:
    data = "\ufeffFirst paragraph.\nStill first.\n\n\n".encode() + HINDI.encode() + b"\r\n\r\nLast."
    doc = parse_document(data, "notes.txt")
    assert doc.kind == "text"
    assert doc.sections[0].text == f"First paragraph.\nStill first.\n\n{HINDI.strip()}\n\nLast."
    french = ("Le café est fermé le lundi. Nous préférons être payés en espèces à la réception. " * 20).encode("cp1252")
    assert "café est fermé" in parse_document(french, "horaires.txt").sections[0].text


def test_csv_rows_become_sections() -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["Name", "City", "Phone"])
    writer.writerows([["Ana", "Lisbon", "+351 1"], ["Bo", "", "+46 2"], ["Chen", "Beijing", "+86 3"]])
    doc = parse_document(out.getvalue().encode(), "contacts.csv")
    assert doc.kind == "csv"
    assert doc.sections[0] == Section("Name: Ana; City: Lisbon; Phone: +351 1", (), "row 2")
    assert doc.sections[1].text == "Name: Bo; Phone: +46 2"  # an empty cell is left out
    chunks = chunk_document(doc)
    assert len(chunks) == 1 and chunks[0].locator == "rows 2-4"


def test_pdf_pages_and_title() -> None:
    data = _pdf(["The first page is about prices.", "The second page is about opening hours."])
    doc = parse_document(data, "brochure.pdf", "application/pdf")
    assert doc.kind == "pdf" and doc.title == "brochure"
    assert [(s.locator, s.text) for s in doc.sections] == [
        ("page 1", "The first page is about prices."),
        ("page 2", "The second page is about opening hours."),
    ]


def test_pdf_refusals() -> None:
    with pytest.raises(DocumentError, match="broken"):
        parse_document(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntruncated", "broken.pdf")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_pdf(["secret plans"]))))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-128")
    locked = io.BytesIO()
    writer.write(locked)
    with pytest.raises(DocumentError, match="password"):
        parse_document(locked.getvalue(), "locked.pdf")
    scanned = FPDF()
    scanned.add_page()
    scanned.rect(20, 20, 100, 100, style="F")  # a page with marks but no text, as a scan is
    with pytest.raises(DocumentError, match=re.escape("no text (scanned? OCR is not supported)")):
        parse_document(bytes(scanned.output()), "scan.pdf")
    many = PdfWriter()
    for _ in range(2001):
        many.add_blank_page(width=72, height=72)
    out = io.BytesIO()
    many.write(out)
    with pytest.raises(DocumentError, match="2001 pages"):
        parse_document(out.getvalue(), "long.pdf")
    with pytest.raises(DocumentError, match="not a valid PDF"):
        parse_document(b"just text", "fake.pdf")


def test_docx_headings_paragraphs_and_tables() -> None:
    doc = parse_document(_docx(), "handbook.docx")
    assert (doc.kind, doc.title) == ("docx", "Clinic handbook")
    assert doc.sections == [
        Section("We are open on weekdays from nine to five.", ("Opening hours",)),
        Section("Closed on public holidays.", ("Opening hours", "Holidays")),
        Section("Service: Check-up; Price: 40 EUR\nService: X-ray; Price: 90 EUR", ("Prices",)),
    ]


def test_hostile_and_unreadable_input() -> None:
    started = time.monotonic()
    with pytest.raises(DocumentError, match="zip bomb"):
        parse_document(_docx(bomb=True), "bomb.docx")
    assert time.monotonic() - started < 10
    for data, name, message in [
        (b"", "empty.txt", "empty"),
        (b"  \n\t ", "blank.md", "empty"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8, "program", "unsupported format"),
        (b"PK\x03\x04 not really a zip", "x.docx", "broken zip"),
        (b"PK\x03\x04 a spreadsheet", "x.xlsx", "spreadsheet"),
        (b"x" * 20_000_001, "huge.txt", "larger than 20 MB"),
        (b"# Only a heading", "h.md", "no text"),
    ]:
        with pytest.raises(DocumentError, match=message):
            parse_document(data, name)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(DocumentError, match="not a DOCX"):
        parse_document(archive.getvalue(), "files.zip")
    deep = b"<html><body>" + b"<div>" * 50_000 + b"deep text" + b"</div>" * 50_000 + b"</body></html>"
    try:  # deep nesting: read, or refused with a DocumentError, never a crash
        parse_document(deep, "deep.html")
    except DocumentError:
        pass


# --- chunking ------------------------------------------------------------------------------------------------


def _passage_tokens(heading: str, text: str) -> int:
    count = model_token_count(f"{heading}\n{text}" if heading else text)
    assert count is not None
    return count


def _numbered(n: int, start: int = 0) -> str:
    return " ".join(
        f"Sentence {i} explains the refund policy and the shipping times in detail." for i in range(start, n)
    )


def test_chunks_carry_headings_overlap_and_order() -> None:
    doc = ParsedDocument("t", [Section(_numbered(200), ("Policies", "Refunds")), Section("Tiny.", ("Policies", "Tax")),
                               Section(_numbered(240, 200), ("Shipping",))], "markdown")  # fmt: skip
    chunks = chunk_document(doc)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.tokens == _passage_tokens(chunk.heading, chunk.text) <= 500
    refunds = [c for c in chunks if c.heading == "Policies > Refunds"]
    assert len(refunds) >= 5 and all(c.tokens >= 200 for c in refunds[:-1])
    for before, after in itertools.pairwise(refunds):
        first = after.text.split(". ")[0]
        assert first in before.text  # the next chunk starts with the previous one's tail
    numbers = [[int(n) for n in re.findall(r"Sentence (\d+)", c.text)] for c in chunks if "Sentence" in c.text]
    assert sorted({n for ns in numbers for n in ns}) == list(range(240))  # nothing lost
    assert all(ns == sorted(ns) for ns in numbers) and [ns[0] for ns in numbers] == sorted(ns[0] for ns in numbers)
    assert any("Tax\nTiny." in c.text for c in chunks)  # a tiny sub-section joins its parent's chunk, titled
    assert chunks[-1].heading == "Shipping" and "Policies" not in chunks[-1].text


def test_long_document_chunks_quickly_with_page_locators() -> None:
    pages = [Section(_numbered(30 * (p + 1), 30 * p), (), f"page {p + 1}") for p in range(200)]
    started = time.monotonic()
    chunks = chunk_document(ParsedDocument("long", pages, "pdf"))
    assert time.monotonic() - started < 10  # about 460,000 characters, each counted by the real tokenizer
    assert all(c.tokens <= 500 for c in chunks)
    assert chunks[0].locator == "page 1" and any(re.fullmatch(r"pages \d+-\d+", c.locator) for c in chunks)


@pytest.mark.parametrize("script", [HINDI, CHINESE, CHINESE.replace("，", "").replace("。", "")])
def test_non_latin_scripts_stay_within_the_model_limit(script: str) -> None:
    doc = ParsedDocument("t", [Section(script * 120, ("शीर्षक",)), Section(script * 3)], "text")
    for count, name in ((None, "model"), (estimate_tokens, "estimate")):
        chunks = chunk_document(doc, count=count)
        assert len(chunks) > 2, name
        assert max(_passage_tokens(c.heading, c.text) for c in chunks) <= MODEL_MAX_TOKENS, name
        assert max(c.tokens for c in chunks) <= 500, name
        assert "".join(c.text for c in chunks).count(script.strip()[:10]) >= 123, name


def test_estimate_is_conservative() -> None:
    for text in (_numbered(30), HINDI * 10, CHINESE * 10, "e-mail: a.b@example.com, 3.14159; (x) [y]"):
        assert estimate_tokens(text) >= _passage_tokens("", text)


# --- fetching ------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/docs/guide.md":
            self._send(200, b"# Guide\n\nHello.", "text/markdown")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/docs/guide.md")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":  # no Content-Length: the stream itself must be cut
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 1024)
        else:
            self._send(404, b"not here", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_fetch_through_the_guard(site: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "")
    with pytest.raises(DocumentError, match="loopback"):  # the guard refuses loopback unless the operator allows it
        await fetch_url(site + "/docs/guide.md")
    with pytest.raises(DocumentError, match="http or https"):
        await fetch_url("file:///etc/passwd")
    monkeypatch.setenv("PARLEY_OUTBOUND_ALLOW", "127.0.0.1")
    data, name, content_type = await fetch_url(site + "/docs/guide.md")
    assert (data, name, content_type) == (b"# Guide\n\nHello.", "guide.md", "text/markdown")
    assert parse_document(data, name, content_type).title == "Guide"
    assert (await fetch_url(site + "/moved"))[1] == "guide.md"  # a redirect is followed, through the guard too
    with pytest.raises(DocumentError, match="HTTP 404"):
        await fetch_url(site + "/missing.pdf")
    with pytest.raises(DocumentError, match="larger than 10,000 bytes"):
        await fetch_url(site + "/big", max_bytes=10_000)
    by_name = site.replace("127.0.0.1", "localhost")  # a name: refused when it resolves, at connect time
    with pytest.raises(DocumentError, match=r"refused: .*localhost resolves to a loopback address"):
        await fetch_url(by_name + "/docs/guide.md", policy=OutboundPolicy.parse(""))
