"""The ``parley`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from parley.agent.document import AgentDocumentError, load_agent
from parley.audio import AudioFormatError
from parley.cli_campaigns import campaigns_app
from parley.cli_knowledge import knowledge_app, parse_sources
from parley.logs import configure_logging

app = typer.Typer(help="Parley: self-hosted voice agents.", no_args_is_help=True, add_completion=False)
agents_app = typer.Typer(help="Agent documents.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
admin_app = typer.Typer(help="Administration from the command line.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
numbers_app = typer.Typer(help="Which tenant owns each number (a tenant maps only its own).", no_args_is_help=True)
admin_app.add_typer(numbers_app, name="numbers")
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(campaigns_app, name="campaigns")
console = Console()
err = Console(stderr=True)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every pipeline event.")) -> None:
    try:
        configure_logging(verbose)  # PARLEY_LOG_LEVEL (default info), PARLEY_LOG_FORMAT: console (default) or json
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def call(
    agent: Path = typer.Argument(..., help="Agent document (.yaml or .json)."),
    input: Path = typer.Option(..., "--input", "-i", help="Caller audio: WAV (any rate, mono/stereo) or .ulaw."),
    output: Path = typer.Option(..., "--output", "-o", help="Stereo WAV of the whole call (caller left, agent right)."),
    report: Path | None = typer.Option(None, "--report", "-r", help="Write the per-turn JSON report here."),
    fast: bool = typer.Option(False, "--fast", help="Skip idle waits; timings stay in simulated call time."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Start the caller's audio at once, over the greeting."),
    knowledge: list[str] = typer.Option(
        [], "--knowledge", help="NAME=PATH: a collection the agent searches, from a file or a directory (repeatable)."
    ),
) -> None:
    """Simulate a phone call offline with a recorded caller (its knowledge collections from local files)."""
    from parley.calls.report import print_report
    from parley.calls.simulate import simulate_call
    from parley.knowledge.local import LocalKnowledgeError, local_knowledge

    sources = parse_sources(knowledge)

    async def run(doc: Any) -> Any:
        async with local_knowledge(doc, sources) as known:
            return await simulate_call(doc, input, output, fast=fast, wait_for_greeting=not no_wait, knowledge=known)

    try:
        result = asyncio.run(run(load_agent(agent)))
    except (AgentDocumentError, AudioFormatError, FileNotFoundError, LocalKnowledgeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print_report(result, console)
    if report:
        result.write(report)
        console.print(f"report: {report}")
    console.print(f"recording: {output}")


@app.command("test")
def test_agent(
    tests: Path = typer.Argument(..., help="A tests file (.tests.yaml): the agent and its scenarios."),
    repeat: int | None = typer.Option(None, "--repeat", "-n", min=1, help="Run each scenario N times."),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here (for CI)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every run, turn by turn, as JSON here."),
    only: str | None = typer.Option(None, "--only", "-k", help="Only scenarios whose name contains this."),
    work: Path | None = typer.Option(None, "--work", help="Keep audio-mode recordings here."),
    url: str | None = typer.Option(None, "--url", help="Test a running `parley serve` (ws://host:port) instead."),
    agent_id: str | None = typer.Option(None, "--agent-id", help="With --url: the served agent (key: PARLEY_API_KEY)."),
) -> None:
    """Check an agent offline against scripted scenarios; exits 1 if any expectation fails.

    The file's top-level ``knowledge: {NAME: [paths]}`` (relative to it) gives the agent's collections offline."""
    from parley.knowledge.local import LocalKnowledgeError
    from parley.testing.reports import print_summary, write_json, write_junit
    from parley.testing.runner import Live, run_file
    from parley.testing.scenarios import TestFileError

    live = None
    if url:
        if not agent_id or not os.environ.get("PARLEY_API_KEY"):
            err.print("[red]error:[/red] --url needs --agent-id and an API key in PARLEY_API_KEY")
            raise typer.Exit(2)
        live = Live(f"{url.rstrip('/')}/v1/agents/{agent_id}/talk", os.environ["PARLEY_API_KEY"])
    try:
        result = asyncio.run(run_file(tests, repeat=repeat, work=work, only=only, live=live))
    except (TestFileError, AgentDocumentError, FileNotFoundError, LocalKnowledgeError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print_summary(result, console)
    if junit:
        write_junit(result, junit)
    if json_out:
        write_json(result, json_out)
    if not result.scenarios:
        err.print("[red]error:[/red] no scenario matched")
        raise typer.Exit(2)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path(".parley/demo"), help="Where the demo's files go."),
    fast: bool = typer.Option(False, "--fast", help="Skip idle waits."),
) -> None:
    """Play a demo call: a synthetic caller asks the receptionist three questions."""
    from parley.calls.demo import run_demo

    run_demo(out_dir, fast, console)


@agents_app.command("validate")
def agents_validate(path: Path) -> None:
    """Check an agent document; each problem is reported by its field."""
    try:
        doc = load_agent(path)
    except AgentDocumentError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    table = Table(show_header=False)
    table.add_row("name", doc.name)
    table.add_row("stt / llm / tts", f"{doc.stt.provider} / {doc.llm.provider} / {doc.tts.provider}")
    table.add_row("end of turn", f"{doc.turn.end_of_turn_secs} s")
    console.print(table)
    console.print("[green]valid[/green]")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default PARLEY_HOST or 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default PARLEY_PORT or 8000)."),
) -> None:
    """Run the HTTP service (API, WebSocket talk, docs at /docs)."""
    import uvicorn

    from parley.api.app import create_app
    from parley.calls.drain import DrainingServer
    from parley.config import Settings

    settings = Settings()
    host = host or settings.host
    port = port or settings.port
    url = f"http://{host}:{port}"
    console.print(f"[bold]Parley[/bold] on {url}  (API docs: {url}/docs)")
    console.print(f"console: [bold]{url}/[/bold]  (sign in with an API key)")
    console.print(f"database: {settings.effective_database_url.split('@')[-1]}")
    console.print(f"first API key:  [bold]{_own_command()} admin create-key --tenant demo --role admin[/bold]")
    level = logging.getLogger().getEffectiveLevel()  # parley.logs set it: PARLEY_LOG_LEVEL, or --verbose
    # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; the app heeds PARLEY_TRUSTED_PROXIES
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        ws="websockets-sansio",
        proxy_headers=False,
        log_level=level,
        access_log=level <= logging.DEBUG,  # a line per request only when debugging
        log_config=None,  # uvicorn's records go through parley.logs (bounded, redacted, written off the loop)
    )
    # SIGTERM drains live calls (up to PARLEY_DRAIN_SECS) before uvicorn closes connections: parley.calls.drain
    server = DrainingServer(config, settings.drain_secs)
    server.run()
    if not server.started:  # the app's start-up failed (uvicorn.run says so the same way)
        raise typer.Exit(3)


def _own_command() -> str:
    """How to run this ``parley`` again: its name when the shell finds this one, else its path (``.venv/bin``)."""
    here = Path(sys.executable).parent / "parley"
    found = shutil.which("parley")
    if found and Path(found).resolve() == here.resolve():
        return "parley"
    return str(here.relative_to(Path.cwd())) if here.is_relative_to(Path.cwd()) else str(here)


@admin_app.command("create-key")
def admin_create_key(
    tenant: str = typer.Option(..., help="Tenant name (created if it does not exist)."),
    role: str = typer.Option("admin", help="admin, editor or viewer."),
    name: str = typer.Option("cli", help="A label for the key."),
) -> None:
    """Create an API key and print it (it is shown only once)."""
    from parley.api.auth import Role
    from parley.store.keys import ApiKeyRepo
    from parley.store.tenants import TenantRepo

    try:
        role_value = Role(role)
    except ValueError:
        err.print(f"[red]error:[/red] role must be admin, editor or viewer, not {role!r}")
        raise typer.Exit(2) from None

    async def create(s: Any) -> str:
        t = await TenantRepo(s).get_or_create(tenant)
        _key, secret = await ApiKeyRepo(s).create(t.id, name, role_value.value)
        return str(secret)

    secret = _on_db(create)
    err.print(f"tenant {tenant!r}, role {role_value.value}: your key (shown once):")
    print(secret)


def _on_db(work: Any) -> Any:
    """Run ``work(session)`` on the configured database, migrated first, and commit."""
    from parley.config import Settings
    from parley.store.db import Database

    async def run() -> Any:
        settings = Settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.effective_database_url)
        try:
            await db.migrate()
            async with db.session() as s:
                return await work(s)
        finally:
            await db.close()

    return asyncio.run(run())


@numbers_app.command("assign")
def admin_numbers_assign(
    number: str = typer.Argument(..., help="E.164 number or SIP user, e.g. +15550100000."),
    tenant: str = typer.Option(..., help="Tenant name (created if it does not exist)."),
) -> None:
    """Give a number to a tenant: only then can its editors map it to an agent (POST /v1/numbers)."""
    from parley.store.errors import Conflict
    from parley.store.numbers import NumberRepo, normalize_number
    from parley.store.tenants import TenantRepo

    async def assign(s: Any) -> None:
        await NumberRepo(s).assign(number, (await TenantRepo(s).get_or_create(tenant)).id)

    try:
        _on_db(assign)
    except Conflict as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"{normalize_number(number)} → tenant {tenant!r}")


@numbers_app.command("unassign")
def admin_numbers_unassign(number: str = typer.Argument(..., help="The number to take back.")) -> None:
    """Take a number from its tenant, with its mapping: calls to it reach no agent until it is assigned again."""
    from parley.store.numbers import NumberRepo, normalize_number

    if not _on_db(lambda s: NumberRepo(s).unassign(number)):
        err.print(f"[red]error:[/red] {normalize_number(number)} is not assigned")
        raise typer.Exit(1)
    console.print(f"{normalize_number(number)} unassigned")


@numbers_app.command("list")
def admin_numbers_list(tenant: str | None = typer.Option(None, help="Only this tenant's numbers.")) -> None:
    """Numbers and the tenants that own them."""
    from parley.store.numbers import NumberRepo
    from parley.store.tenants import TenantRepo

    async def owners(s: Any) -> list[tuple[str, str]]:
        if tenant is None:
            return await NumberRepo(s).owners()
        found = await TenantRepo(s).by_name(tenant)
        return [] if found is None else await NumberRepo(s).owners(found.id)

    for number, name in _on_db(owners):
        print(f"{number}\t{name}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (SQLite also migrates itself when the service starts)."""
    from parley.config import Settings
    from parley.store.db import upgrade

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    console.print("[green]database is up to date[/green]")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models ship in packages; never reach for a hub
    app()


if __name__ == "__main__":
    main()
