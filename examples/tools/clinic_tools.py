"""Two example Python tools for a clinic's phone agent (see the README's "Python tools").

Use them from an agent document with::

    tools:
      - type: python
        function: examples.tools.clinic_tools:opening_hours
      - type: python
        function: examples.tools.clinic_tools:caller_greeting
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from parley.tools.base import ToolContext, ToolResult
from parley.tools.python_tool import function_tool


class Day(StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


HOURS = {Day.SATURDAY: "9:00 to 12:00", Day.SUNDAY: "closed"}


@function_tool(filler="Let me look at our hours.")
def opening_hours(day: Annotated[Day, Field(description="The day the caller asks about")]) -> dict[str, str]:
    """The clinic's opening hours on one day of the week."""
    return {"day": day.value, "hours": HOURS.get(day, "8:00 to 18:00")}


@function_tool
async def caller_greeting(context: ToolContext, language: str = "en") -> ToolResult:
    """A greeting for the caller that uses their number when the clinic knows it.

    Args:
        language: The caller's language, as a two-letter code.
    """
    caller = str(context.variables.get("caller", ""))
    known = caller.endswith("0100")  # an example of a known patient's number
    greeting = "Welcome back!" if known else "Welcome to the clinic!"
    if language != "en":
        greeting += f" (language {language})"
    return ToolResult({"greeting": greeting}, variables={"known_caller": known})
