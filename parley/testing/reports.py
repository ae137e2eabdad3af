"""Results out: JUnit XML (one testcase per scenario run, for CI), JSON (everything), and a console summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parley.testing.runner import FileResult


def junit_xml(result: FileResult) -> str:
    """A ``<testsuites>`` document: a suite per scenario, a testcase per run, a ``<failure>`` per unmet expectation."""
    root = ET.Element("testsuites", name=f"parley test {result.path}")
    total = failed = 0
    for scenario in result.scenarios:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=scenario.name,
            tests=str(len(scenario.runs) + (1 if scenario.failures else 0)),
            failures=str(sum(not r.passed for r in scenario.runs) + (1 if scenario.failures else 0)),
            time=f"{sum(r.duration_s for r in scenario.runs):.3f}",
        )
        for run in scenario.runs:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=scenario.name,
                name=f"{scenario.name} #{run.index + 1}",
                time=f"{run.duration_s:.3f}",
            )
            for f in run.failures:
                ET.SubElement(case, "failure", type=f.kind, message=f.message).text = f.message
        if scenario.failures:  # the scenario as a whole (its latency budget)
            case = ET.SubElement(suite, "testcase", classname=scenario.name, name=f"{scenario.name} (all runs)")
            for f in scenario.failures:
                ET.SubElement(case, "failure", type=f.kind, message=f.message).text = f.message
        total += int(suite.get("tests", "0"))
        failed += int(suite.get("failures", "0"))
    root.set("tests", str(total))
    root.set("failures", str(failed))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: FileResult, path: str | Path) -> None:
    Path(path).write_text(junit_xml(result), encoding="utf-8")


def write_json(result: FileResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")


def print_summary(result: FileResult, console: Console) -> None:
    """A line per scenario (pass rate, failure kinds, latency), then each distinct failure message once."""
    table = Table(title=f"{result.agent}: {result.path}")
    for col in ("scenario", "mode", "passed", "failures", "v2v p50/p95 ms"):
        table.add_column(col)
    for s in result.scenarios:
        rate = f"{sum(r.passed for r in s.runs)}/{len(s.runs)}"
        style = "green" if s.passed else "red"
        kinds = ", ".join(f"{k}×{n}" for k, n in s.failure_kinds().items()) or "-"
        p50, p95 = s.latency.get("p50_ms"), s.latency.get("p95_ms")
        lat = f"{p50:.0f}/{p95:.0f}" if p50 is not None and p95 is not None else "-"
        table.add_row(s.name, s.mode, f"[{style}]{rate}[/{style}]", kinds, lat)
    console.print(table)
    for s in result.scenarios:
        seen: set[str] = set()
        for f in [*s.failures, *(f for r in s.runs for f in r.failures)]:
            if f.message not in seen:
                seen.add(f.message)
                console.print(f"[red]✗[/red] {escape(f'{s.name}: [{f.kind}] {f.message}')}", highlight=False)
    verdict = "[green]all scenarios passed[/green]" if result.passed else "[red]some scenarios failed[/red]"
    console.print(verdict)
