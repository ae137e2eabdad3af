"""The web console: static ES modules served by the API's own app, so ``parley serve`` is the whole product.

No build step and nothing from a CDN (the console must work air-gapped): ``static/`` holds the modules as they run,
and ``static/vendor/`` the pinned libraries ``scripts/vendor_console.py`` put there. Every page is the same
``index.html`` (a hash router picks the view), served at ``/`` and ``/console/``. The console reads and writes
only through the public ``/v1`` API with the user's own key, so whatever it does a script can do too.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

STATIC = Path(__file__).resolve().parent / "static"
INDEX = STATIC / "index.html"
#: the agent the console offers as a template: the packaged demo receptionist, not a copy of it
RECEPTIONIST = resources.files("parley.calls") / "receptionist.yaml"


class Template(BaseModel):
    """An agent document to start from, as YAML text (comments kept: they explain the choices)."""

    name: str = Field(description="the template's name")
    yaml: str = Field(description="the agent document as YAML")


def _index() -> FileResponse:
    # no-cache: a new release's index (and so its module URLs) must be picked up at once; modules revalidate
    return FileResponse(INDEX, media_type="text/html", headers={"cache-control": "no-cache"})


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/`` and ``/console/``: call after the API's routers (the mount catches its prefix)."""
    # browsers refuse ES modules served with any other type, and some systems' tables map .mjs to nothing
    mimetypes.add_type("text/javascript", ".js")
    mimetypes.add_type("text/javascript", ".mjs")

    page = {
        "tags": ["console"],
        "response_class": FileResponse,
        "responses": {200: {"content": {"text/html": {}}, "description": "the console's page"}},
    }

    @app.get("/", summary="The web console", **page)  # type: ignore[arg-type]
    async def console_root() -> FileResponse:
        """The console's single page (its views are hash routes: ``/#/agents``). Public: it holds no data, and
        signs in with an API key kept in the browser tab."""
        return _index()

    @app.get("/console/", summary="The web console (under /console/)", **page)  # type: ignore[arg-type]
    async def console_index() -> FileResponse:
        """The same page as ``/``; ``/console/…`` serves its modules and styles."""
        return _index()

    @app.get(
        "/console/templates/receptionist.json",
        response_model=Template,
        tags=["console"],
        summary="The receptionist agent template",
        description="The packaged demo receptionist's agent document as YAML, for the console's 'new agent' form. "
        "Public: it holds no tenant data.",
    )
    async def receptionist_template() -> JSONResponse:
        text = RECEPTIONIST.read_text(encoding="utf-8")
        return JSONResponse({"name": "Receptionist", "yaml": text}, headers={"cache-control": "no-cache"})

    @app.get("/console/oidc/callback", summary="The console's OIDC sign-in callback", **page)  # type: ignore[arg-type]
    async def console_oidc_callback() -> FileResponse:
        """Where the OIDC issuer sends the browser back with ``?code=…&state=…``: the same page, whose script
        checks the state, exchanges the code and takes it out of the address (parley.api.console_oidc)."""
        return _index()

    app.mount("/console", StaticFiles(directory=STATIC), name="console")
