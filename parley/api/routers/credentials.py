"""Provider credentials: set (write-only), list names, delete. Agent documents reference them by name.

Editors set and delete them (the ``agents:write`` scope: a credential is part of an agent's configuration);
anyone who may read agents may list the names. No route ever returns a value.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from parley.api.deps import ReadAgents, State, WriteAgents
from parley.store.credentials import CredentialInfo, CredentialRepo, CredentialsUnavailable, cipher_for
from parley.store.errors import Conflict

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_VALUE_CHARS = 4096
_HOST = re.compile(r"^\.?(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?)*$")
CredentialName = Annotated[str, Path(pattern=NAME_PATTERN, description="letters, digits, _ . - (64 at most)")]


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # checked by hand, not by pydantic: a validation error would quote the value back
    value: Any = Field(description="the secret (an API key); it is never returned")
    hosts: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="hosts it may be sent to (.example.com: a whole domain); empty: any host",
    )


class CredentialOut(BaseModel):
    name: str
    hosts: list[str]
    created_at: datetime
    updated_at: datetime


def _out(info: CredentialInfo) -> CredentialOut:
    return CredentialOut(name=info.name, hosts=list(info.hosts), created_at=info.created_at, updated_at=info.updated_at)


def _unprocessable(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def _checked(body: CredentialIn) -> tuple[str, tuple[str, ...]]:
    value = body.value
    if not isinstance(value, str) or not value.strip():
        raise _unprocessable("value", "must be a non-empty string")
    if len(value) > MAX_VALUE_CHARS:
        raise _unprocessable("value", f"must be at most {MAX_VALUE_CHARS} characters")
    if not all(0x20 <= ord(c) < 0x7F for c in value):  # it travels in an HTTP header: visible ASCII only
        raise _unprocessable("value", "must be printable ASCII (no line breaks, control or non-ASCII characters)")
    hosts = tuple(dict.fromkeys(h.strip().lower().rstrip(".") for h in body.hosts))
    for host in hosts:
        if not _HOST.fullmatch(host):
            raise _unprocessable("hosts", f"{host[:80]!r} is not a host name (a leading dot: a whole domain)")
    return value, hosts


def _cipher(state: State) -> Any:
    try:
        return cipher_for(state.settings)
    except CredentialsUnavailable as exc:
        raise HTTPException(503, detail=f"credentials are not available: {exc}") from None


@router.put("/{name}", response_model=CredentialOut)
async def set_credential(
    name: CredentialName, body: CredentialIn, who: WriteAgents, state: State, response: Response
) -> CredentialOut:
    value, hosts = _checked(body)
    cipher = _cipher(state)
    try:
        async with state.db.session() as s:
            row, created = await CredentialRepo(s, cipher).set(who.tenant_id, name, value, hosts)
            info = CredentialInfo(row.name, hosts, row.created_at, row.updated_at)
    except Conflict:
        raise HTTPException(409, detail=f"credential {name!r} is being set by another request; retry") from None
    response.status_code = 201 if created else 200
    return _out(info)


@router.get("", response_model=list[CredentialOut])
async def list_credentials(who: ReadAgents, state: State) -> list[CredentialOut]:
    cipher = _cipher(state)
    async with state.db.session() as s:
        return [_out(i) for i in await CredentialRepo(s, cipher).list(who.tenant_id)]


@router.delete("/{name}", status_code=204)
async def delete_credential(name: CredentialName, who: WriteAgents, state: State) -> Response:
    async with state.db.session() as s:
        if not await CredentialRepo(s, _cipher(state)).delete(who.tenant_id, name):
            raise HTTPException(404, detail="credential not found")
    return Response(status_code=204)
