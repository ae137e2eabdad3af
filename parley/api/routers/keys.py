"""API keys: create (the secret is shown once), list, revoke. Admins only.

A key never mints more power than it holds: the new key's role and scopes must lie within the creator's, or a key
limited to ``keys`` could create an unscoped admin key and, through it, do everything.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from parley.api.auth import Principal, Role
from parley.api.deps import SCOPES, ManageKeys, State, effective_scopes
from parley.api.schemas import KeyCreate, KeyCreated, KeyOut
from parley.store.keys import ApiKeyRepo
from parley.store.models import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def check_within(who: Principal, role: Role, scopes: tuple[str, ...]) -> None:
    """403 unless a key of ``role`` limited to ``scopes`` (none: every scope) can do nothing ``who`` cannot."""
    if not who.role.allows(role):
        raise HTTPException(status_code=403, detail=f"a {who.role.value} cannot create a {role.value} key")
    beyond = set(scopes or SCOPES) - set(effective_scopes(who))
    if beyond:
        detail = "a key cannot hold scopes its creator lacks: " + ", ".join(s for s in SCOPES if s in beyond)
        if not scopes:
            detail += " (a key without scopes holds all of them: list the scopes it needs)"
        raise HTTPException(status_code=403, detail=detail)


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, who: ManageKeys, state: State) -> dict[str, Any]:
    check_within(who, body.role, tuple(body.scopes))
    async with state.db.session() as s:
        key, secret = await ApiKeyRepo(s).create(who.tenant_id, body.name, body.role.value, tuple(body.scopes))
    return {**KeyOut.model_validate(key).model_dump(), "secret": secret}


@router.get("", response_model=list[KeyOut])
async def list_keys(who: ManageKeys, state: State) -> list[ApiKey]:
    async with state.db.session() as s:
        return list(await ApiKeyRepo(s).list(who.tenant_id))


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: uuid.UUID, who: ManageKeys, state: State) -> Response:
    async with state.db.session() as s:
        if not await ApiKeyRepo(s).revoke(who.tenant_id, key_id):
            raise HTTPException(status_code=404, detail="key not found")
    return Response(status_code=204)
