"""``GET /v1/me``: who the caller is, as the web console needs it (its tenant, its key's name, role, scopes)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from parley.api.auth import Principal
from parley.api.console_schemas import MeOut
from parley.api.deps import State, effective_scopes, principal
from parley.store.keys import ApiKeyRepo

router = APIRouter(prefix="/v1/me", tags=["me"])


@router.get("", response_model=MeOut)
async def me(who: Annotated[Principal, Depends(principal)], state: State) -> MeOut:
    """Any valid credential may ask (no role or scope needed): nothing here is secret, the key's secret and hash
    are never read. ``scopes`` are those the credential effectively holds, so a client can hide what it cannot do."""
    key_name = None
    if who.key_id is not None:
        async with state.db.session() as s:
            key = await ApiKeyRepo(s).get(who.tenant_id, who.key_id)
        key_name = key.name if key is not None else None
    return MeOut(
        tenant_id=who.tenant_id,
        key_id=who.key_id,
        key_name=key_name,
        subject=who.subject,
        kind=who.kind,
        role=str(who.role),
        scopes=list(effective_scopes(who)),
    )
