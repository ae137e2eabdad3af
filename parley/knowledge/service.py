"""The process's knowledge base: opened with the service, searched by calls through :meth:`KnowledgeBase.for_tenant`.

Calls reach it through :func:`current` (set when the service opens its state), so every transport that starts a
call finds it without threading it through each one; None means no knowledge base in this process (``parley test``
text runs, a bare pipeline), and agents that name collections then answer without knowledge (with an event).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parley.knowledge.types import KnowledgeSearch

_current: KnowledgeBase | None = None


class KnowledgeBase:
    """Documents, chunks and indexes of every tenant; searching always goes through one tenant's view."""

    def for_tenant(self, tenant_id: uuid.UUID) -> KnowledgeSearch:
        raise NotImplementedError  # filled in by the retrieval work (same session)


def current() -> KnowledgeBase | None:
    return _current


def install(kb: KnowledgeBase | None) -> None:
    global _current
    _current = kb
