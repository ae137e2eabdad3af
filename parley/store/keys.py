"""API keys. Only a SHA-256 of the secret is stored: secrets are 32 random bytes, so a
slow password hash would add latency to every request and no security."""

from __future__ import annotations

import builtins
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from parley.store.models import ApiKey, utcnow

ROLES = ("admin", "editor", "viewer")
SECRET_PREFIX = "pk_"
DISPLAY_CHARS = 12
#: ``last_used_at`` is stamped at most this often per key and process: a write (and its commit's fsync) on every
#: request made each API call pay for the disk — seconds when the database's disk is busy
STAMP_EVERY_S = 60.0
_stamped: dict[uuid.UUID, float] = {}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyRepo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(
        self, tenant_id: uuid.UUID, name: str, role: str, scopes: Iterable[str] = ()
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is returned here once and never again."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            tenant_id=tenant_id,
            name=name,
            prefix=secret[:DISPLAY_CHARS],
            key_hash=hash_secret(secret),
            role=role,
            scopes=list(scopes),
            created_at=utcnow(),
        )
        self.session.add(key)
        await self.session.flush()
        return key, secret

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret (and its tenant_id), stamping ``last_used_at`` (to the minute: see
        STAMP_EVERY_S); None otherwise."""
        key = await self.session.scalar(
            select(ApiKey).where(ApiKey.key_hash == hash_secret(secret), ApiKey.revoked_at.is_(None))
        )
        now = time.monotonic()
        if key is not None and now - _stamped.get(key.id, -STAMP_EVERY_S) >= STAMP_EVERY_S:
            if len(_stamped) > 10_000:
                _stamped.clear()
            _stamped[key.id] = now
            key.last_used_at = utcnow()
            await self.session.flush()
        return key

    async def list(self, tenant_id: uuid.UUID) -> builtins.list[ApiKey]:
        rows = await self.session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)
        )
        return builtins.list(rows)

    async def get(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))

    async def is_live(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """Whether this tenant's key exists and is not revoked (talk tokens it minted die with it)."""
        found = await self.session.scalar(
            select(ApiKey.id).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        )
        return found is not None

    async def revoke(self, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
        """True when a live key of this tenant was revoked; False if unknown, foreign or already revoked."""
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session="fetch")
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
