"""Python tools for the flow tests: a booking tool that records what it was asked (a real function, not a mock)."""

from __future__ import annotations

from typing import Any

from parley.tools.python_tool import function_tool

BOOKINGS: list[dict[str, Any]] = []


@function_tool(side_effect="irreversible")
async def book_appointment(day: str) -> dict[str, Any]:
    """Book an appointment on a day of the week."""
    BOOKINGS.append({"day": day})
    return {"booked": True, "booking_id": f"B{len(BOOKINGS)}", "day": day, "time": "10:00"}
