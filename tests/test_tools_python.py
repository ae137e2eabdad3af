"""Python tools: the schema from hints and docstrings, the call context, sync functions off the loop, errors."""

from __future__ import annotations

import asyncio
import sys
import threading
from enum import Enum
from typing import Annotated, Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field, ValidationError

from parley.services.secrets import NoSecrets
from parley.tools.base import SideEffect, ToolContext, ToolError, ToolResult
from parley.tools.python_tool import FunctionTool, PythonToolConfig, function_tool


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


@function_tool(side_effect="idempotent", filler="Checking.", deadline_s=5)
async def book(
    day: Annotated[str, Field(description="The day to book")],
    slot: Literal["am", "pm"],
    party: int,
    colour: Colour = Colour.RED,
    note: str | None = None,
    tags: list[str] | None = None,
    urgent: bool = False,
    weight: float = 1.0,
) -> dict[str, Any]:
    """Book an appointment.

    Only on weekdays; this paragraph is not part of the description.

    Args:
        party: How many people come,
            counting the caller.
        day: ignored, the Field description wins.
    """
    return {"day": day, "slot": slot, "party": party, "colour": colour.value, "tags": tags, "urgent": urgent}


def test_schema_from_hints_and_docstring() -> None:
    assert isinstance(book, FunctionTool)
    assert book.name == "book"
    assert book.description == "Book an appointment."
    assert (book.side_effect, book.filler, book.deadline_s) == (SideEffect.IDEMPOTENT, "Checking.", 5)
    schema = book.parameters
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert schema["type"] == "object"
    assert sorted(schema["required"]) == ["day", "party", "slot"]
    assert props["day"] == {"type": "string", "description": "The day to book"}
    assert props["slot"]["enum"] == ["am", "pm"]
    assert props["party"] == {"type": "integer", "description": "How many people come, counting the caller."}
    assert props["urgent"]["type"] == "boolean"
    assert props["weight"]["type"] == "number"
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert Draft202012Validator(schema).is_valid({"day": "mon", "slot": "am", "party": 2, "colour": "blue"})
    assert not Draft202012Validator(schema).is_valid({"day": "mon", "slot": "noon", "party": 2})


async def test_arguments_are_coerced_and_checked() -> None:
    result = await book.run({"day": "mon", "slot": "pm", "party": 2, "colour": "blue"}, ToolContext())
    assert result.content["colour"] == "blue"  # the function got Colour.BLUE, not the string
    with pytest.raises(ToolError) as info:
        await book.run({"day": "mon", "slot": "noon", "party": 2}, ToolContext())
    assert info.value.kind == "bad-arguments"


async def test_context_is_injected_and_not_in_schema() -> None:
    said: list[str] = []
    acted: list[tuple[str, str]] = []

    async def say(text: str) -> None:
        said.append(text)

    async def act(action: str, target: str) -> None:
        acted.append((action, target))

    @function_tool
    async def transfer_to_desk(ctx: ToolContext, reason: str) -> ToolResult:
        """Send the caller to the front desk."""
        await ctx.speak(f"Transferring you: {reason}")
        assert ctx.act is not None
        await ctx.act("transfer", "sip:desk@clinic")
        return ToolResult({"ok": True}, variables={"transferred_from": ctx.variables["caller"]})

    assert list(transfer_to_desk.parameters["properties"]) == ["reason"]
    context = ToolContext(call_id="c1", variables={"caller": "+15550100"}, say=say, act=act)
    result = await transfer_to_desk.run({"reason": "billing"}, context)
    assert result.content == {"ok": True}
    assert result.variables == {"transferred_from": "+15550100"}
    assert said == ["Transferring you: billing"]
    assert acted == [("transfer", "sip:desk@clinic")]


async def test_sync_function_runs_off_the_loop() -> None:
    loop_thread = threading.get_ident()

    class Where(BaseModel):
        thread: int

    @function_tool
    def where() -> Where:
        """Which thread ran me."""
        return Where(thread=threading.get_ident())

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    @function_tool
    def blocking() -> str:
        """Block for a while, as a slow driver would."""
        threading.Event().wait(0.3)
        return "ok"

    task = asyncio.create_task(ticker())
    try:
        assert (await blocking.run({}, ToolContext())).content == "ok"
    finally:
        task.cancel()
    assert ticks >= 10  # the loop kept running while the function blocked
    content = (await where.run({}, ToolContext())).content
    assert content["thread"] != loop_thread


async def test_exceptions_become_failed_without_message(capsys: pytest.CaptureFixture[str]) -> None:
    @function_tool
    def leaky() -> str:
        """Fail with a secret in the message."""
        raise KeyError("token sk-live-abc123")

    with pytest.raises(ToolError) as info:
        await leaky.run({}, ToolContext())
    assert info.value.kind == "failed"
    assert str(info.value) == "KeyError"
    assert "abc123" not in str(info.value)

    @function_tool
    async def own_error() -> str:
        """Report a tool error of its own."""
        raise ToolError("timeout", "backend slow")

    with pytest.raises(ToolError) as mine:
        await own_error.run({}, ToolContext())
    assert mine.value.kind == "timeout"


def test_decorated_function_stays_callable() -> None:
    @function_tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add(2, 3) == 5
    assert add.__name__ == "add"


async def test_config_by_module_path_fills_from_the_function() -> None:
    config = PythonToolConfig.model_validate(
        {"type": "python", "function": "examples.tools.clinic_tools:opening_hours"}
    )
    assert config.name == "opening_hours"
    assert config.description.startswith("The clinic's opening hours")
    assert "day" in config.parameters["properties"]
    [tool] = await config.create(NoSecrets())
    assert tool.filler == "Let me look at our hours."
    result = await tool.run({"day": "sunday"}, ToolContext())
    assert result.content == {"day": "sunday", "hours": "closed"}


async def test_config_overrides_and_greeting_example() -> None:
    config = PythonToolConfig.model_validate(
        {
            "type": "python",
            "function": "examples.tools.clinic_tools:caller_greeting",
            "name": "greet",
            "side_effect": "irreversible",
            "deadline_s": 2,
        }
    )
    [tool] = await config.create(NoSecrets())
    assert (tool.name, tool.side_effect, tool.deadline_s) == ("greet", SideEffect.IRREVERSIBLE, 2)
    assert list(tool.parameters["properties"]) == ["language"]
    result = await tool.run({}, ToolContext(variables={"caller": "+15550100"}))
    assert result.content == {"greeting": "Welcome back!"}
    assert result.variables == {"known_caller": True}


def test_config_errors_name_the_function() -> None:
    with pytest.raises(ValidationError, match=r"examples\.tools\.nope:f"):
        PythonToolConfig.model_validate({"type": "python", "function": "examples.tools.nope:f"})
    with pytest.raises(ValidationError, match="no_such"):
        PythonToolConfig.model_validate({"type": "python", "function": "examples.tools.clinic_tools:no_such"})
    with pytest.raises(ValidationError, match="entry point 'missing-tool'"):
        PythonToolConfig.model_validate({"type": "python", "entry_point": "missing-tool"})
    with pytest.raises(ValidationError, match="not decorated with @function_tool"):
        PythonToolConfig.model_validate({"type": "python", "function": "os:system"})
    with pytest.raises(ValidationError, match="either function"):
        PythonToolConfig.model_validate({"type": "python"})
    with pytest.raises(ValidationError, match="built-in action"):
        PythonToolConfig.model_validate(
            {"type": "python", "function": "examples.tools.clinic_tools:opening_hours", "name": "hang_up"}
        )


def test_entry_point(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool installed by a package under the ``parley.tools`` entry point group."""
    dist = tmp_path / "clinic_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clinic-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[parley.tools]\nhours = examples.tools.clinic_tools:opening_hours\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    config = PythonToolConfig.model_validate({"type": "python", "entry_point": "hours"})
    assert config.name == "opening_hours"
