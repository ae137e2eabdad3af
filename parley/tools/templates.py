"""``{{ name }}`` placeholders in a tool's URL, query, headers and body, filled from the LLM's arguments and the
call's variables. Lookup only (``{{ caller }}``, ``{{ booking.id }}``): no expressions, no code, so a document can
never run anything through a template.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")


def names_in(value: Any) -> set[str]:
    """The first part of every placeholder's name in ``value`` (a string, or dicts/lists of them)."""
    if isinstance(value, str):
        return {m.group(1).split(".")[0] for m in PLACEHOLDER.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(names_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(names_in(v) for v in value)) if value else set()
    return set()


def lookup(namespace: dict[str, Any], name: str) -> Any:
    value: Any = namespace
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def render_text(template: str, namespace: dict[str, Any], *, url: bool = False) -> str:
    """``template`` with each placeholder's value as text (URL-encoded for URL paths when ``url``)."""

    def fill(m: re.Match[str]) -> str:
        text = _text(lookup(namespace, m.group(1)))
        return quote(text, safe="") if url else text

    return PLACEHOLDER.sub(fill, template)


def render_value(template: Any, namespace: dict[str, Any]) -> Any:
    """A JSON body: a string that is exactly one placeholder keeps the value's type (a number stays a number)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        return lookup(namespace, whole.group(1)) if whole else render_text(template, namespace)
    if isinstance(template, dict):
        return {k: render_value(v, namespace) for k, v in template.items()}
    if isinstance(template, list):
        return [render_value(v, namespace) for v in template]
    return template
