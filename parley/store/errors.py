"""Errors the repositories raise, so the API layer can map them to HTTP statuses."""

from __future__ import annotations


class Conflict(Exception):
    """A unique constraint would be broken (e.g. a second agent with the same name)."""


class NotFound(Exception):
    """The row does not exist for this tenant."""
