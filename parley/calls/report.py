"""Prints a call's transcript with per-turn timings."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from parley.calls.simulate import CallReport
from parley.pipeline.frames import Stage


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.0f} ms"


def print_report(report: CallReport, console: Console) -> None:
    if report.greeting and report.greeting.agent_text:
        console.print(f"[bold cyan]agent[/bold cyan]  {report.greeting.agent_text}")
    for turn in report.turns:
        console.print(f"[bold green]caller[/bold green] {turn.caller_text or '(nothing understood)'}")
        said = turn.agent_text or "(no reply)"
        cut = " [yellow](interrupted)[/yellow]" if turn.interrupted else ""
        console.print(f"[bold cyan]agent[/bold cyan]  {said}{cut}")
    table = Table(
        title=f"{report.agent}: {len(report.turns)} turns, {report.duration:.1f} s call",
        caption="ms after the caller's speech end: STT final, LLM first token, TTS first audio, agent audio out",
    )
    for col in ("turn", "speech end", "STT", "LLM", "TTS", "out", "voice-to-voice"):
        table.add_column(col, justify="right", no_wrap=True)
    for turn in report.turns:
        t = turn.times
        end = t.get(Stage.SPEECH_END)

        def rel(stage: str, t: dict[str, float] = t, end: float | None = end) -> str:
            return "—" if stage not in t or end is None else f"+{(t[stage] - end) * 1000:.0f}"

        table.add_row(
            str(turn.turn),
            f"{end:.2f} s" if end is not None else "—",
            rel(Stage.STT_FINAL),
            rel(Stage.LLM_FIRST_TOKEN),
            rel(Stage.TTS_FIRST_AUDIO),
            rel(Stage.FIRST_AUDIO_OUT),
            _ms(turn.voice_to_voice),
        )
    console.print(table)
    for e in report.errors:
        console.print(f"[red]error[/red] {e}")
