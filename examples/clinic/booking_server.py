"""A small clinic booking server for the clinic example agent's HTTP tools.

It checks each request's Parley HMAC signature (``X-Parley-Timestamp``, ``X-Parley-Signature``) with the shared
secret in ``CLINIC_TOOL_SECRET``, keeps bookings in memory and remembers idempotency keys, so a retried request
books once. Run it beside ``parley call examples/agents/clinic.yaml``:

    CLINIC_TOOL_SECRET=dev-secret python examples/clinic/booking_server.py --port 8089
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from parley.tools.signing import verify

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
TIMES = ("09:00", "10:30", "14:00", "16:30")


class Clinic:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.bookings: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(101)

    async def _checked(self, request: Request) -> bytes | JSONResponse:
        body = await request.body()
        ts = request.headers.get("x-parley-timestamp", "")
        sig = request.headers.get("x-parley-signature", "")
        if not verify(self.secret, ts, body, sig):  # Parley's HMAC over timestamp + body, within 5 minutes
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return body

    async def slots(self, request: Request) -> JSONResponse:
        checked = await self._checked(request)
        if isinstance(checked, JSONResponse):
            return checked
        day = request.query_params.get("day", "").strip().lower()
        if day not in DAYS:
            return JSONResponse({"day": day, "open": False, "times": []})
        taken = {b["time"] for b in self.bookings.values() if b["day"] == day}
        return JSONResponse({"day": day, "open": True, "times": [t for t in TIMES if t not in taken]})

    async def book(self, request: Request) -> JSONResponse:
        checked = await self._checked(request)
        if isinstance(checked, JSONResponse):
            return checked
        key = request.headers.get("idempotency-key", "")
        if key and key in self.by_key:
            return JSONResponse(self.by_key[key])
        try:
            data = json.loads(checked)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        day = str(data.get("day", "")).strip().lower()
        if day not in DAYS:
            return JSONResponse({"booked": False, "reason": f"we are closed on {day or 'that day'}"})
        taken = {b["time"] for b in self.bookings.values() if b["day"] == day}
        free = [t for t in TIMES if t not in taken]
        wanted = str(data.get("time") or "")
        time_ = wanted if wanted in free else (free[0] if free else "")
        if not time_:
            return JSONResponse({"booked": False, "reason": f"{day} is fully booked"})
        booking = {
            "booked": True,
            "booking_id": f"B{next(self._ids)}",
            "day": day.capitalize(),
            "time": time_,
            "name": str(data.get("name") or ""),
            "caller": str(data.get("caller") or ""),
        }
        self.bookings[booking["booking_id"]] = booking
        if key:
            self.by_key[key] = booking
        return JSONResponse(booking)

    async def list_bookings(self, request: Request) -> JSONResponse:
        return JSONResponse(list(self.bookings.values()))


def app(secret: str) -> Starlette:
    clinic = Clinic(secret)
    routes = [
        Route("/slots", clinic.slots, methods=["GET"]),
        Route("/bookings", clinic.book, methods=["POST"]),
        Route("/bookings", clinic.list_bookings, methods=["GET"]),
    ]
    server = Starlette(routes=routes)
    server.state.clinic = clinic
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    secret = os.environ.get("CLINIC_TOOL_SECRET", "")
    if not secret:
        raise SystemExit("set CLINIC_TOOL_SECRET (the same value the agent's tools sign with)")
    uvicorn.run(app(secret), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
