"""API keys: create (the secret is shown once), list, revoke. Admins only."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from parley.api.deps import ManageKeys, State
from parley.api.schemas import KeyCreate, KeyCreated, KeyOut
from parley.store.keys import ApiKeyRepo
from parley.store.models import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, who: ManageKeys, state: State) -> dict[str, Any]:
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
