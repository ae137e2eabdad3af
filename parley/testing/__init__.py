"""``parley test``: agents checked offline, in text or through the whole voice pipeline, turn by turn.

Python API: ``result = await run_text(agent, ["hi", ...])`` then
``result.expect.next_turn().replied(contains="Monday")``; ``run_file`` runs a ``tests.yaml``.
"""

from parley.testing.expect import CallResult, Failure, TurnAssert, TurnResult
from parley.testing.runner import FileResult, ScenarioResult, ScenarioRun, run_file, run_scenario, run_text
from parley.testing.scenarios import Scenario, TestFile, TestFileError, load_tests
from parley.testing.text_call import MindOptions, TextCall

__all__ = [
    "CallResult",
    "Failure",
    "FileResult",
    "MindOptions",
    "Scenario",
    "ScenarioResult",
    "ScenarioRun",
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
