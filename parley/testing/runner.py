"""Runs a tests file: each scenario ``repeat`` times, its expectations checked, pass rates and latency gathered.

Models load once per file and are shared by its scenarios (text mode loads only the LLM).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parley.agent.document import AgentDocument, load_agent
from parley.calls.knowledge import CallKnowledge
from parley.calls.session import Services
from parley.knowledge.local import local_knowledge
from parley.services.secrets import EnvSecrets
from parley.testing.audio_call import run_audio_call
from parley.testing.expect import CallResult, Failure, check_turn
from parley.testing.results import ScenarioResult, ScenarioRun
from parley.testing.scenarios import Scenario, TestFile, Turn, load_tests
from parley.testing.text_call import (
    SILENCE,
    CallerInput,
    Keys,
    MindOptions,
    close_text_services,
    run_text_call,
    text_services,
    with_tools,
)


@dataclass
class FileResult:
    path: str
    agent: str
    scenarios: list[ScenarioResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.scenarios)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "agent": self.agent,
            "passed": self.passed,
            "scenarios": [s.as_dict() for s in self.scenarios],
        }


@dataclass(frozen=True)
class Live:
    """A running ``parley serve`` to test against instead of a local pipeline: its talk URL and an API key."""

    url: str
    key: str


class SharedServices:
    """The file's models, made on first need: only the LLM for text scenarios, everything for audio ones."""

    def __init__(self, agent: AgentDocument, live: Live | None = None, knowledge: CallKnowledge | None = None) -> None:
        self.agent = agent
        self.live = live
        self.knowledge = knowledge  # the file's local collections (None: the agent answers without)
        self._text: Services | None = None
        self._full: Services | None = None

    async def text(self) -> Services:
        if self._full is not None:
            return self._full
        if self._text is None:
            made = await text_services(self.agent, EnvSecrets.from_settings())
            self._text = dataclasses.replace(made, knowledge=self.knowledge)
        return self._text

    async def full(self) -> Services:
        if self._full is None:
            made = await Services.create(self.agent, EnvSecrets.from_settings())
            self._full = dataclasses.replace(made, knowledge=self.knowledge)
        return self._full

    async def aclose(self) -> None:
        if self._text is not None:
            await close_text_services(self._text)
        if self._full is not None:
            await self._full.aclose()


def check_run(scenario: Scenario, result: CallResult) -> list[Failure]:
    """The scenario's expectations on one call, turn by turn."""
    failures = [Failure("error", f"the call reported an error: {e}") for e in result.errors]
    for i, turn in enumerate(scenario.turns, start=1):
        if i > len(result.turns):
            failures.append(Failure("turns", f"turn {i}: the call had only {len(result.turns)} turn(s)", i))
            continue
        failures += check_turn(result.turns[i - 1], turn.expect)
    return failures


def latency_check(scenario: Scenario, runs: list[ScenarioRun]) -> tuple[dict[str, float | None], list[Failure]]:
    """Voice-to-voice percentiles (ms) over every turn of every run, against the scenario's budget."""
    values = [t.voice_to_voice * 1000 for r in runs if r.result for t in r.result.turns if t.voice_to_voice is not None]
    stats: dict[str, float | None] = {"samples": float(len(values)), "p50_ms": None, "p95_ms": None}
    if values:
        stats["p50_ms"] = round(float(np.percentile(values, 50)), 1)
        stats["p95_ms"] = round(float(np.percentile(values, 95)), 1)
    budget = scenario.latency.voice_to_voice if scenario.latency else None
    if budget is None or (budget.p50_ms is None and budget.p95_ms is None):
        return stats, []
    if not values:
        return stats, [Failure("latency", "no voice-to-voice measurement: latency budgets need `mode: audio`")]
    failures = []
    for name, limit in (("p50_ms", budget.p50_ms), ("p95_ms", budget.p95_ms)):
        got = stats[name]
        if limit is not None and got is not None and got > limit:
            failures.append(
                Failure("latency", f"voice-to-voice {name[:3]} {got:.0f} ms is over the budget of {limit:.0f} ms")
            )
    return stats, failures


async def _one_run(
    agent: AgentDocument, tests: TestFile, scenario: Scenario, services: SharedServices, index: int, work: Path
) -> ScenarioRun:
    run = ScenarioRun(index, None, tool_mocks=dict(scenario.tool_mocks))
    started = time.perf_counter()
    try:
        if services.live is not None:
            from parley.testing.live_call import run_live_call

            run.result = await run_live_call(services.live.url, services.live.key, tests, scenario, seed=index)
        elif scenario.mode == "audio":
            own, box = await with_tools(agent, await services.full(), MindOptions(tool_mocks=run.tool_mocks))
            try:
                run.result = await run_audio_call(agent, tests, scenario, own, work, seed=index)
            finally:
                if box is not None:
                    await box.aclose()
        else:
            mind = MindOptions(variables=dict(scenario.variables), tool_mocks=run.tool_mocks)
            lines = [_caller_input(t) for t in scenario.turns]
            run.result = await run_text_call(agent, lines, await services.text(), mind)
        run.failures = check_run(scenario, run.result)
    except Exception as exc:  # a crashed run is a failed run, reported with the rest
        run.failures = [Failure("crash", f"{type(exc).__name__}: {exc}")]
    run.duration_s = time.perf_counter() - started
    return run


async def run_scenario(
    scenario: Scenario,
    tests: TestFile,
    agent: AgentDocument,
    services: SharedServices,
    repeat: int | None = None,
    work: Path | None = None,
) -> ScenarioResult:
    """Run ``scenario`` ``repeat`` times (default: its own ``repeat``) and check it."""
    out = ScenarioResult(scenario.name, scenario.mode)
    base = work or Path(tempfile.mkdtemp(prefix="parley-test-"))
    for i in range(repeat or scenario.repeat):
        out.runs.append(await _one_run(agent, tests, scenario, services, i, base / _slug(scenario.name)))
    out.latency, out.failures = latency_check(scenario, out.runs)
    return out


async def run_file(
    path: str | Path,
    repeat: int | None = None,
    work: Path | None = None,
    only: str | None = None,
    live: Live | None = None,
) -> FileResult:
    """Every scenario of a tests file (those whose name contains ``only``, if given); against ``live`` if given
    (whose own knowledge base then answers: the file's ``knowledge`` is read only offline)."""
    tests = load_tests(path)
    agent = load_agent(tests.path(tests.agent))
    sources = tests.knowledge_sources() if live is None else {}
    async with local_knowledge(agent, sources) as knowledge:
        return await _run_tests(path, tests, agent, SharedServices(agent, live, knowledge), repeat, work, only)


async def _run_tests(
    path: str | Path, tests: TestFile, agent: AgentDocument, services: SharedServices,
    repeat: int | None, work: Path | None, only: str | None,
) -> FileResult:  # fmt: skip
    from parley.testing.simulated import run_simulated  # an LLM caller: only when the file has one

    result = FileResult(str(path), agent.name)
    try:
        for scenario in tests.scenarios:
            if only is None or only in scenario.name:
                result.scenarios.append(await run_scenario(scenario, tests, agent, services, repeat, work))
        for sim in tests.simulated:
            if only is None or only in sim.name:
                result.scenarios.append(await run_simulated(sim, agent, await services.text(), repeat))
    finally:
        await services.aclose()
    return result


async def run_text(
    agent: AgentDocument | str | Path,
    lines: Sequence[CallerInput],
    *,
    tool_mocks: dict[str, Any] | None = None,
    variables: dict[str, Any] | None = None,
    services: Services | None = None,
) -> CallResult:
    """Python API: say ``lines`` to ``agent`` in text mode and return the call to check with ``result.expect``
    (a line is words, ``Keys("1")`` pressed, or ``SILENCE``)."""
    doc = agent if isinstance(agent, AgentDocument) else load_agent(agent)
    own = services is None
    services = services or await text_services(doc, EnvSecrets.from_settings())
    try:
        return await run_text_call(doc, lines, services, MindOptions(variables or {}, tool_mocks or {}))
    finally:
        if own:
            await close_text_services(services)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:60] or "scenario"


def _caller_input(turn: Turn) -> CallerInput:
    """A scenario turn as the text call takes it: words, keys pressed, or a silence."""
    if turn.keys is not None:
        return Keys(turn.keys)
    if turn.silent:
        return SILENCE
    return turn.caller or ""
