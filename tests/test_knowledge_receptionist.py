"""End to end: a PDF uploaded to the knowledge base answers a caller of the receptionist, and the turn cites it.

Everything real: the PDF (written by fpdf2) is parsed, chunked and embedded by the ingestion worker into SQLite,
the process's knowledge base is installed as ``parley serve`` installs it, and a live call on the fast clock runs
the example receptionist (Silero, Whisper, the embedded llama, piper) with espeak's voice as the caller. The fact
asked about is only in the PDF, not in the agent's prompt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import yaml
from fpdf import FPDF

from parley.knowledge import service
from parley.knowledge.ingest import Ingestor
from parley.knowledge.service import KnowledgeBase
from parley.store.knowledge import KnowledgeRepo
from parley.store.models import KnowledgeDocument

from .support.audio import espeak, silence
from .support.keyed_call import Store, open_store, run_keyed_call

ROOT = Path(__file__).resolve().parent.parent
FAQ = [
    ("Our team", "The dentist at Bright Smile Dental is Doctor Raman. She has worked here for twelve years."),
    ("Insurance", "We accept Delta Dental and Aetna insurance plans."),
]


def faq_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    for heading, text in FAQ:
        pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path, "bright-smile") as opened:
        yield opened


@pytest.fixture
def restore_kb() -> Iterator[None]:
    before = service.current()
    try:
        yield
    finally:
        service.install(before)


def receptionist() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples/agents/receptionist.yaml").read_text())
    doc["greeting"] = ""  # the caller speaks at once
    # the budget is the caller's latency promise; here the CPU is shared with the other tests, so it is wider
    doc["knowledge"] = {"collections": ["faq"], "budget_ms": 1500}
    return doc


async def test_the_receptionist_answers_from_an_uploaded_pdf_and_cites_it(store: Store, restore_kb: None) -> None:
    kb = KnowledgeBase(store.db)
    async with store.db.session() as s:
        repo = KnowledgeRepo(s)
        collection = await repo.create_collection(store.tenant, "faq", "")
        document = await repo.put_document(collection, "faq.pdf", faq_pdf(), "application/pdf")
    assert await Ingestor(kb).run_once() == 1
    async with store.db.session() as s:
        ingested = await s.get(KnowledgeDocument, document.id)
        assert ingested is not None
        assert (ingested.status, ingested.error) == ("ready", None), ingested.error
    service.install(kb)

    audio = np.concatenate([silence(0.5), espeak("What is the name of your dentist?"), silence(12)])
    rec = await run_keyed_call(store, receptionist(), audio.astype("<i2").tobytes(), [], timeout_s=240)

    turn = rec.turns[1]
    assert "dentist" in turn.caller_text.lower(), turn.caller_text
    assert "raman" in turn.agent_text.lower(), turn.agent_text  # said, not only generated
    assert turn.citations and turn.citations[0]["document"] == "faq.pdf", turn.citations
    assert turn.citations[0]["collection"] == "faq" and turn.citations[0]["locator"]  # a page a person can open
    [event] = [e for e in rec.of("knowledge") if e["turn"] == 1][-1:]
    assert event["status"] == "ok" and event["elapsed_ms"] < 1500
