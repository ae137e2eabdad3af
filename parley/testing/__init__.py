"""``parley test``: agents checked offline, in text or through the whole voice pipeline, turn by turn.

Python API: ``result = await run_text(agent, ["hi", ...])`` then
``result.expect.next_turn().replied(contains="Monday")``; ``run_file`` runs a ``tests.yaml``.
"""

from parley.testing.expect import CallResult, Failure, TurnAssert, TurnResult
from parley.testing.runner import FileResult, ScenarioResult, ScenarioRun, run_file, run_scenario, run_text
from parley.testing.scenarios import Scenario, TestFile, TestFileError, load_tests
from parley.testing.text_call import SILENCE, Keys, MindOptions, Silence, TextCall

__all__ = [
    "SILENCE",
    "CallResult",
    "Failure",
    "FileResult",
    "Keys",
    "MindOptions",
    "Scenario",
    "ScenarioResult",
    "ScenarioRun",
    "Silence",
    "TestFile",
    "TestFileError",
    "TextCall",
    "TurnAssert",
    "TurnResult",
    "load_tests",
    "run_file",
    "run_scenario",
    "run_text",
]
