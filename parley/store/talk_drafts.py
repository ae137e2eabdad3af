"""Talk drafts: the unsaved agent document a talk token's one session runs (the console's "talk to this draft").

A draft is kept in the database, not in the token: a document can be far larger than a URL may be, and the
WebSocket may reach another worker than the one that issued the token. It is keyed by the token's signed id,
so no other token can open it; the session that opens takes it (deletes it), and drafts past their expiry
(the token's) are pruned whenever another is kept.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import TalkDraft, utcnow


class TalkDraftRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def keep(
        self,
        tenant_id: uuid.UUID,
        agent_id: uuid.UUID,
        token_id: str,
        based_on_version: int,
        document: dict[str, Any],
        expires_at: datetime,
    ) -> TalkDraft:
        """Keep ``document`` for the token ``token_id`` until ``expires_at``; expired drafts go first."""
        await self.prune()
        draft = TalkDraft(
            token_id=token_id,
            tenant_id=tenant_id,
            agent_id=agent_id,
            based_on_version=based_on_version,
            document=document,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        self.session.add(draft)
        await self.session.flush()
        return draft

    async def take(self, tenant_id: uuid.UUID, agent_id: uuid.UUID, token_id: str) -> TalkDraft | None:
        """The token's draft, deleted as it is read (one session per token); None if there is none (any more).
        Expired drafts are pruned here too, so they do not wait for the next draft to be kept."""
        await self.prune()
        draft = await self.session.scalar(
            select(TalkDraft).where(
                TalkDraft.token_id == token_id,
                TalkDraft.tenant_id == tenant_id,
                TalkDraft.agent_id == agent_id,
                TalkDraft.expires_at > utcnow(),
            )
        )
        if draft is not None:
            await self.session.execute(delete(TalkDraft).where(TalkDraft.token_id == token_id))
        return draft

    async def prune(self) -> int:
        """Delete every expired draft (any tenant's: housekeeping); returns how many went."""
        result = await self.session.execute(delete(TalkDraft).where(TalkDraft.expires_at <= utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)
