"""``parley knowledge …``: upload documents to a running service and watch them being ingested, list, search.

It talks to the service's API (the process that ingests), with an API key from ``--key`` or ``PARLEY_API_KEY``,
so it works the same against a local ``make run`` and a remote deployment.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from parley.config import Settings

knowledge_app = typer.Typer(help="Knowledge collections: documents agents answer from.", no_args_is_help=True)
console = Console(stderr=True)
FINAL = ("ready", "failed")

Server = typer.Option(None, "--server", envvar="PARLEY_URL", help="the service (default: PARLEY_HOST:PARLEY_PORT)")
Key = typer.Option(..., "--key", envvar="PARLEY_API_KEY", help="an editor's API key")


def parse_sources(values: list[str]) -> dict[str, list[Path]]:
    """``--knowledge NAME=PATH`` options (repeatable, PATH a file or a directory) as collection name → paths."""
    sources: dict[str, list[Path]] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"expected NAME=PATH (a collection and a file or directory), not {value!r}")
        sources.setdefault(name.strip(), []).append(Path(path.strip()))
    return sources


def _client(server: str | None, key: str) -> httpx.Client:
    if server is None:
        settings = Settings()
        server = f"http://{settings.host}:{settings.port}"
    return httpx.Client(base_url=server.rstrip("/"), headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _request(c: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API request; a service that cannot be reached is said plainly, not as a traceback."""
    try:
        return _check(c.request(method, path, **kwargs))
    except httpx.TransportError as exc:
        console.print(f"[red]cannot reach the service at {c.base_url}:[/red] {exc}")
        raise typer.Exit(2) from None


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        console.print(f"[red]error {response.status_code}:[/red] {detail}")
        raise typer.Exit(1)
    return response.json() if response.content else None


def _ensure_collection(c: httpx.Client, name: str) -> None:
    try:
        missing = c.get(f"/v1/knowledge/{name}").status_code == 404
    except httpx.TransportError as exc:
        console.print(f"[red]cannot reach the service at {c.base_url}:[/red] {exc}")
        raise typer.Exit(2) from None
    if missing:
        _request(c, "POST", "/v1/knowledge", json={"name": name})
        console.print(f"created collection [bold]{name}[/bold]")


def _watch(c: httpx.Client, collection: str, docs: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
    """A progress bar per document until each is ready or failed."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                  console=console) as progress:  # fmt: skip
        tasks: dict[str, TaskID] = {
            d["id"]: progress.add_task(d["name"][:40], total=1.0, state=d["status"]) for d in docs
        }
        deadline = time.monotonic() + timeout_s
        latest = {d["id"]: d for d in docs}
        while any(d["status"] not in FINAL for d in latest.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            for doc_id in tasks:
                if latest[doc_id]["status"] in FINAL:
                    continue
                latest[doc_id] = d = _request(c, "GET", f"/v1/knowledge/{collection}/documents/{doc_id}")
                state = d["stage"] if d["status"] == "processing" else d["status"]
                if d["chunks_total"]:
                    state += f" {d['chunks_done']}/{d['chunks_total']} chunks"
                progress.update(tasks[doc_id], completed=d["progress"], state=state)
    return list(latest.values())


@knowledge_app.command("add")
def add(
    collection: str = typer.Argument(..., help="the collection (created if it does not exist)"),
    files: list[Path] = typer.Argument(None, help="Markdown, text, HTML, PDF, DOCX or CSV files"),
    url: list[str] = typer.Option([], "--url", help="a web page or document to fetch (repeatable)"),
    wait: bool = typer.Option(True, help="show progress until every document is ready"),
    timeout: float = typer.Option(1800, help="seconds to wait"),
    server: str | None = Server,
    key: str = Key,
) -> None:
    """Upload documents (a re-upload of a file name is its next version) and show their ingestion."""
    if not files and not url:
        raise typer.BadParameter("give files or --url")
    with _client(server, key) as c:
        _ensure_collection(c, collection)
        docs: list[dict[str, Any]] = []
        if files:
            parts = [("files", (f.name, f.read_bytes(), mimetypes.guess_type(f.name)[0] or "application/octet-stream"))
                     for f in files]  # fmt: skip
            docs += _request(c, "POST", f"/v1/knowledge/{collection}/documents", files=parts)
        if url:
            docs += _request(c, "POST", f"/v1/knowledge/{collection}/urls", json={"urls": url})
        final = _watch(c, collection, docs, timeout) if wait else docs
    failed = [d for d in final if d["status"] == "failed"]
    for d in failed:
        console.print(f"[red]failed[/red] {d['name']}: {d['error']}")
    for d in final:
        if d["status"] == "ready":
            console.print(f"[green]ready[/green] {d['name']} (version {d['version']}, {d['chunks_total']} chunks)")
    if failed or (wait and any(d["status"] not in FINAL for d in final)):
        raise typer.Exit(1)


@knowledge_app.command("list")
def list_collections(server: str | None = Server, key: str = Key) -> None:
    """The tenant's collections, with their document and chunk counts."""
    with _client(server, key) as c:
        for coll in _request(c, "GET", "/v1/knowledge"):
            typer.echo(f"{coll['name']}\t{coll['documents']} documents\t{coll['chunks']} chunks")


@knowledge_app.command("search")
def search(
    collection: str,
    query: str,
    top_k: int = typer.Option(4, "--top-k"),
    server: str | None = Server,
    key: str = Key,
) -> None:
    """What a call asking ``query`` would be given from the collection, with scores."""
    with _client(server, key) as c:
        hits = _request(c, "POST", f"/v1/knowledge/{collection}/search", json={"query": query, "top_k": top_k})
    for h in hits:
        where = f" {h['locator']}" if h["locator"] else ""
        typer.echo(f"{h['score']:.3f}  {h['document']}#{h['chunk']}{where}\n    {h['text'][:200]}")
    if not hits:
        typer.echo("no match above the threshold")
