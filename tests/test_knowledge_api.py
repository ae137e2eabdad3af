"""The knowledge API and CLI on a real ``parley serve``: collections, uploads answered 202 and ingested in the
background with progress, search, chunks, versions, deletion, limits and tenant isolation; `parley knowledge add`
with its progress bar, as the README tells a newcomer."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .support.service import ROOT, Service

FAQ = b"""# Harbor Clinic FAQ

## Parking
Visitors park in the garage on Maple Street; the first two hours are free.

## Wi-Fi
The guest network is HarborGuest and its password is BLUEHERON42.
"""


def _ready(c: httpx.Client, collection: str, doc_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = c.get(f"/v1/knowledge/{collection}/documents/{doc_id}").json()
        if doc["status"] in ("ready", "failed"):
            return dict(doc)
        time.sleep(0.2)
    raise AssertionError(f"{doc_id} not ingested in {timeout} s: {doc}")


def test_upload_ingest_search_version_delete(service: Service, key: str) -> None:
    with service.client(key) as c:
        assert c.post("/v1/knowledge", json={"name": "clinic", "description": "the FAQ"}).status_code == 201
        assert c.post("/v1/knowledge", json={"name": "clinic"}).status_code == 409
        assert c.post("/v1/knowledge", json={"name": "../etc"}).status_code == 422
        up = c.post("/v1/knowledge/clinic/documents", files=[("files", ("faq.md", FAQ, "text/markdown"))])
        assert up.status_code == 202, up.text
        (doc,) = up.json()
        assert doc["status"] == "queued" and doc["version"] == 1 and doc["live_version"] == 0
        doc = _ready(c, "clinic", doc["id"])
        assert (doc["status"], doc["kind"], doc["progress"], doc["live_version"]) == ("ready", "markdown", 1.0, 1)
        hits = c.post("/v1/knowledge/clinic/search", json={"query": "where can I park?"}).json()
        assert hits and "Maple Street" in hits[0]["text"] and hits[0]["document"] == "faq.md"
        chunks = c.get(f"/v1/knowledge/clinic/documents/{doc['id']}/chunks").json()
        assert any("BLUEHERON42" in ch["text"] for ch in chunks)
        listed = c.get("/v1/knowledge").json()
        assert [(x["name"], x["documents"]) for x in listed] == [("clinic", 1)] and listed[0]["chunks"] >= 1
        # the next version of the same name replaces the chunks
        new = FAQ.replace(b"Maple Street", b"Cedar Avenue")
        again = c.post("/v1/knowledge/clinic/documents", files=[("files", ("faq.md", new, "text/markdown"))]).json()
        assert again[0]["id"] == doc["id"] and again[0]["version"] == 2
        assert _ready(c, "clinic", doc["id"])["live_version"] == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a worker's cache reloads the collection in the background
            hits = c.post("/v1/knowledge/clinic/search", json={"query": "where can I park?"}).json()
            if hits and "Cedar Avenue" in hits[0]["text"]:
                break
            time.sleep(0.2)
        assert "Cedar Avenue" in hits[0]["text"] and not any("Maple" in h["text"] for h in hits)
        # a broken document fails with its reason
        bad = c.post(
            "/v1/knowledge/clinic/documents", files=[("files", ("scan.pdf", b"%PDF-1.4 garbage", "application/pdf"))]
        )
        failed = _ready(c, "clinic", bad.json()[0]["id"])
        assert failed["status"] == "failed" and failed["error"]
        # deleting a document removes it from search
        assert c.delete(f"/v1/knowledge/clinic/documents/{doc['id']}").status_code == 204
        assert c.get(f"/v1/knowledge/clinic/documents/{doc['id']}").status_code == 404
        time.sleep(1.2)  # past the revision cache
        c.post("/v1/knowledge/clinic/search", json={"query": "where can I park?"})
        time.sleep(0.5)
        assert c.post("/v1/knowledge/clinic/search", json={"query": "where can I park?"}).json() == []
        assert c.delete("/v1/knowledge/clinic").status_code == 204
        assert c.get("/v1/knowledge/clinic").status_code == 404


def test_limits_and_bad_input(service: Service, key: str) -> None:
    with service.client(key) as c:
        c.post("/v1/knowledge", json={"name": "limits"})
        assert (
            c.post("/v1/knowledge/limits/documents", files=[("files", ("e.txt", b"", "text/plain"))]).status_code == 422
        )
        assert (
            c.post("/v1/knowledge/nope/documents", files=[("files", ("a.txt", b"hi", "text/plain"))]).status_code == 404
        )
        assert c.post("/v1/knowledge/limits/urls", json={"urls": ["file:///etc/passwd"]}).status_code == 422
        # a URL the SSRF guard refuses: accepted, then failed with the reason
        up = c.post("/v1/knowledge/limits/urls", json={"urls": ["http://127.0.0.1:9/secret"]})
        assert up.status_code == 202
        doc = _ready(c, "limits", up.json()[0]["id"])
        assert doc["status"] == "failed" and doc["error"]
        # over the upload limit: 413 before anything is stored
        big = b"x" * (int(service.env.get("PARLEY_KNOWLEDGE_MAX_UPLOAD_BYTES", "20000000")) + 10)
        r = c.post("/v1/knowledge/limits/documents", files=[("files", ("big.txt", big, "text/plain"))])
        assert r.status_code == 413
        # a body a little over the general 1 MB limit is fine for uploads (not for other routes)
        mid = b"The clinic is open. " * 60_000
        r = c.post("/v1/knowledge/limits/documents", files=[("files", ("mid.txt", mid, "text/plain"))])
        assert r.status_code == 202
        # deleted at once: the ingestor drops it at its next step instead of embedding ~1,000 chunks
        assert c.delete(f"/v1/knowledge/limits/documents/{r.json()[0]['id']}").status_code == 204
        assert c.post("/v1/knowledge/limits/search", content=b'{"query": "' + b"x" * 1_100_000 + b'"}',
                      headers={"content-type": "application/json"}).status_code == 413  # fmt: skip


def test_viewers_read_but_do_not_change(service: Service, key: str, tenant_name: str) -> None:
    viewer = service.create_key(tenant_name, role="viewer")
    with service.client(key) as c:
        c.post("/v1/knowledge", json={"name": "seen"})
    with service.client(viewer) as v:
        assert v.get("/v1/knowledge/seen").status_code == 200
        assert v.post("/v1/knowledge", json={"name": "mine"}).status_code == 403
        assert v.delete("/v1/knowledge/seen").status_code == 403


def test_the_cli_uploads_and_shows_progress(service: Service, key: str, tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_bytes(FAQ)
    env = {**os.environ, "PARLEY_API_KEY": key, "PARLEY_URL": service.url}
    out = subprocess.run([sys.executable, "-m", "parley.cli", "knowledge", "add", "cli-docs", str(faq)],
                         env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "created collection" in out.stderr and "ready faq.md" in out.stderr
    found = subprocess.run([sys.executable, "-m", "parley.cli", "knowledge", "search", "cli-docs", "wifi password"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert found.returncode == 0 and "BLUEHERON42" in found.stdout
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really")
    out = subprocess.run([sys.executable, "-m", "parley.cli", "knowledge", "add", "cli-docs", str(broken)],
                         env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)  # fmt: skip
    assert out.returncode == 1 and "failed broken.pdf" in out.stderr
