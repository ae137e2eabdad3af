"""What a scenario's runs came to: each run's failures, the pass rate, the failure kinds, the latency."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from parley.testing.expect import CallResult, Failure


@dataclass
class ScenarioRun:
    """One run of a scenario."""

    index: int
    result: CallResult | None
    failures: list[Failure] = field(default_factory=list)
    duration_s: float = 0.0
    #: the tool results this run's toolbox was given instead of the real tools
    tool_mocks: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.index,
            "passed": self.passed,
            "duration_s": round(self.duration_s, 3),
            "failures": [f.as_dict() for f in self.failures],
            "greeting": self.result.greeting if self.result else "",
            "turns": [t.as_dict() for t in self.result.turns] if self.result else [],
        }


@dataclass
class ScenarioResult:
    name: str
    mode: str
    runs: list[ScenarioRun] = field(default_factory=list)
    #: failures of the scenario as a whole (a latency budget over all runs)
    failures: list[Failure] = field(default_factory=list)
    latency: dict[str, float | None] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures and all(r.passed for r in self.runs)

    @property
    def pass_rate(self) -> float:
        return sum(r.passed for r in self.runs) / len(self.runs) if self.runs else 0.0

    def failure_kinds(self) -> dict[str, int]:
        """How many runs failed for each kind (a run counts once per kind), plus scenario-wide failures."""
        kinds: collections.Counter[str] = collections.Counter()
        for run in self.runs:
            kinds.update({f.kind for f in run.failures})
        kinds.update(f.kind for f in self.failures)
        return dict(sorted(kinds.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "passed": self.passed,
            "pass_rate": round(self.pass_rate, 4),
            "repeat": len(self.runs),
            "failure_kinds": self.failure_kinds(),
            "failures": [f.as_dict() for f in self.failures],
            "latency": self.latency,
            "runs": [r.as_dict() for r in self.runs],
        }
