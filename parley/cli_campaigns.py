"""``parley campaigns …``: create a campaign from a file, upload its contacts, start/pause/resume/cancel it,
list, show, export, and watch its progress, against a running service (``--server``/``PARLEY_URL``, ``--key``/
``PARLEY_API_KEY``), like ``parley knowledge``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from parley.cli_knowledge import Key, Server, _client, _request, console

campaigns_app = typer.Typer(help="Outbound campaigns: many calls from a contact list.", no_args_is_help=True)
FINAL_STATUSES = ("completed", "cancelled")
FINAL_STATES = ("done", "failed", "dnc", "cancelled")


def _summary(campaign: dict[str, Any]) -> str:
    counts = campaign.get("counts") or {}
    states = ", ".join(f"{k} {v}" for k, v in sorted((counts.get("by_state") or {}).items()))
    return f"{campaign['id']}  {campaign['status']:<9}  {campaign['name']}  ({states or 'no contacts'})"


def _report(report: dict[str, Any] | None) -> None:
    if not report:
        return
    console.print(
        f"accepted {report['accepted']} (do-not-call {report['dnc']}), duplicates {report['duplicates']}, "
        f"rejected {report['rejected_count']}"
    )
    for bad in report["rejected"][:20]:
        console.print(f"  row {bad['row']}: {bad['phone']!r}: {bad['error']}")
    if report.get("error"):
        console.print(f"[red]stopped:[/red] {report['error']}")


@campaigns_app.command("create")
def create(file: Path = typer.Argument(..., exists=True, dir_okay=False), server: str | None = Server,
           key: str = Key) -> None:  # fmt: skip
    """Create a draft campaign from a YAML or JSON file (name, agent_id, provider, caller_id, schedule, …)."""
    body = yaml.safe_load(file.read_text())  # JSON is YAML too
    with _client(server, key) as c:
        campaign = _request(c, "POST", "/v1/campaigns", json=body)
    _report(campaign.get("import"))
    typer.echo(campaign["id"])


def _chunks(path: Path, total: int) -> Iterator[bytes]:
    with Progress(TextColumn("upload"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        task = bar.add_task("upload", total=total)
        with path.open("rb") as f:
            while chunk := f.read(1 << 16):
                bar.advance(task, len(chunk))
                yield chunk


@campaigns_app.command("upload")
def upload(campaign_id: str, csv_file: Path = typer.Argument(..., exists=True, dir_okay=False),
           region: str | None = typer.Option(None, help="country (US, GB) of numbers written without +"),
           server: str | None = Server, key: str = Key) -> None:  # fmt: skip
    """Upload a CSV of contacts (streamed): a phone column, optional timezone/language/greeting, any variables."""
    params = {"region": region} if region else {}
    with _client(server, key) as c:
        c.timeout = httpx.Timeout(600)
        body = _chunks(csv_file, csv_file.stat().st_size)
        report = _request(c, "POST", f"/v1/campaigns/{campaign_id}/contacts", content=body, params=params,
                          headers={"content-type": "text/csv"})  # fmt: skip
    _report(report)


def _action(action: str, campaign_id: str, server: str | None, key: str) -> None:
    with _client(server, key) as c:
        typer.echo(_summary(_request(c, "POST", f"/v1/campaigns/{campaign_id}/{action}")))


@campaigns_app.command("start")
def start(campaign_id: str, server: str | None = Server, key: str = Key) -> None:
    """Start a draft campaign."""
    _action("start", campaign_id, server, key)


@campaigns_app.command("pause")
def pause(campaign_id: str, server: str | None = Server, key: str = Key) -> None:
    """Pause a running campaign (calls under way finish)."""
    _action("pause", campaign_id, server, key)


@campaigns_app.command("resume")
def resume(campaign_id: str, server: str | None = Server, key: str = Key) -> None:
    """Resume a paused campaign."""
    _action("resume", campaign_id, server, key)


@campaigns_app.command("cancel")
def cancel(campaign_id: str, server: str | None = Server, key: str = Key) -> None:
    """Cancel a campaign: waiting contacts end as cancelled."""
    _action("cancel", campaign_id, server, key)


@campaigns_app.command("list")
def list_campaigns(server: str | None = Server, key: str = Key) -> None:
    """The tenant's campaigns, newest first."""
    with _client(server, key) as c:
        for campaign in _request(c, "GET", "/v1/campaigns", params={"limit": 200}):
            typer.echo(f"{campaign['id']}  {campaign['status']:<9}  {campaign['name']}")


@campaigns_app.command("show")
def show(campaign_id: str, server: str | None = Server, key: str = Key) -> None:
    """A campaign with its counts, as JSON."""
    with _client(server, key) as c:
        typer.echo(json.dumps(_request(c, "GET", f"/v1/campaigns/{campaign_id}"), indent=2))


@campaigns_app.command("export")
def export(campaign_id: str, format: str = typer.Option("csv", help="csv, json or jsonl"),
           server: str | None = Server, key: str = Key) -> None:  # fmt: skip
    """Write the campaign's results to stdout, a row per contact with its analysis fields."""
    with _client(server, key) as c:
        try:
            with c.stream("GET", f"/v1/campaigns/{campaign_id}/export", params={"format": format}) as r:
                if r.status_code >= 400:
                    r.read()
                    _request(c, "GET", f"/v1/campaigns/{campaign_id}")  # says why (404 …)
                    raise typer.Exit(1)
                for chunk in r.iter_bytes():
                    sys.stdout.buffer.write(chunk)
        except httpx.TransportError as exc:
            console.print(f"[red]cannot reach the service at {c.base_url}:[/red] {exc}")
            raise typer.Exit(2) from None


@campaigns_app.command("watch")
def watch(campaign_id: str, interval: float = typer.Option(2.0, min=0.2), server: str | None = Server,
          key: str = Key) -> None:  # fmt: skip
    """A progress bar (contacts in a final state) until the campaign completes or is cancelled."""
    with _client(server, key) as c, Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[states]}"),
        console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task(campaign_id[:8], total=None, states="")
        while True:
            campaign = _request(c, "GET", f"/v1/campaigns/{campaign_id}")
            counts = campaign["counts"]
            states = counts["by_state"]
            done = sum(states.get(s, 0) for s in FINAL_STATES)
            text = " ".join(f"{k}={v}" for k, v in sorted(states.items())) + f" in_flight={counts['in_flight']}"
            bar.update(task, total=counts["total"], completed=done, states=f"{campaign['status']} {text}")
            if campaign["status"] in FINAL_STATUSES:
                break
            time.sleep(interval)
    typer.echo(_summary(campaign))
