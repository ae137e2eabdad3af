"""Tenants' provider credentials (API keys), encrypted at rest, resolved by name when a call's services start.

Values are Fernet tokens (AES-128-CBC + HMAC-SHA256) under the operator's key: ``PARLEY_CREDENTIALS_KEY`` (one or
more keys, comma-separated: the first encrypts, all decrypt, so keys can be rotated), else a key generated once
into ``data_dir/credentials.key`` (mode 0600). Several workers must share the same key. The plaintext also
names its tenant and credential, so a ciphertext copied to another row (or tenant) does not decrypt as valid.

A credential may name the hosts it may be sent to; an agent pointing elsewhere cannot use it, so an editor who
cannot read a key cannot send it to a host of their own either.
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from parley.config import Settings
from parley.services.secrets import CredentialError
from parley.store.db import Database
from parley.store.errors import Conflict
from parley.store.models import ProviderCredential, utcnow

KEY_FILE = "credentials.key"


class CredentialsUnavailable(RuntimeError):
    """The operator's key is missing or malformed; the message says which setting to fix (never the key)."""


def _read_or_create_key(path: Path) -> str:
    """The key in ``path``, written first (0600, atomically, once even with several workers) if absent."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(Fernet.generate_key().decode() + "\n")
    try:
        os.link(tmp, path)  # fails if another process got there first: its key wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


@lru_cache(maxsize=8)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError):
        raise CredentialsUnavailable(
            "PARLEY_CREDENTIALS_KEY must be Fernet keys (32 url-safe base64 bytes each, comma-separated)"
        ) from None


def cipher_for(settings: Settings) -> MultiFernet:
    """The operator's cipher: PARLEY_CREDENTIALS_KEY, else the generated key file under the data directory."""
    if settings.credentials_key is not None:
        keys = tuple(k.strip() for k in settings.credentials_key.get_secret_value().split(",") if k.strip())
    else:
        try:
            keys = (_read_or_create_key(settings.data_dir / KEY_FILE),)
        except OSError as exc:
            raise CredentialsUnavailable(f"cannot read or create {settings.data_dir / KEY_FILE}: {exc}") from None
    if not keys:
        raise CredentialsUnavailable("PARLEY_CREDENTIALS_KEY is empty")
    return _cipher(keys)


@dataclass(frozen=True)
class Secret:
    value: str
    hosts: tuple[str, ...]  # empty: any host


@dataclass(frozen=True)
class CredentialInfo:
    """What the API may show of a credential: never its value."""

    name: str
    hosts: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


class CredentialRepo:
    def __init__(self, session: AsyncSession, cipher: MultiFernet) -> None:
        self.session = session
        self.cipher = cipher

    def _seal(self, tenant_id: uuid.UUID, name: str, value: str, hosts: tuple[str, ...]) -> str:
        payload = json.dumps({"tenant": str(tenant_id), "name": name, "value": value, "hosts": list(hosts)})
        return self.cipher.encrypt(payload.encode()).decode()

    def _open(self, row: ProviderCredential) -> Secret | None:
        try:
            data = json.loads(self.cipher.decrypt(row.ciphertext.encode()))
        except (InvalidToken, ValueError):
            return None  # another key, or tampered with
        if data.get("tenant") != str(row.tenant_id) or data.get("name") != row.name:
            return None
        return Secret(str(data["value"]), tuple(data.get("hosts") or ()))

    async def _row(self, tenant_id: uuid.UUID, name: str) -> ProviderCredential | None:
        return await self.session.scalar(
            select(ProviderCredential).where(ProviderCredential.tenant_id == tenant_id, ProviderCredential.name == name)
        )

    async def set(
        self, tenant_id: uuid.UUID, name: str, value: str, hosts: tuple[str, ...] = ()
    ) -> tuple[ProviderCredential, bool]:
        """Store (or replace) a credential; True when it is new."""
        ciphertext, now = self._seal(tenant_id, name, value, hosts), utcnow()
        row = await self._row(tenant_id, name)
        if row is not None:
            row.ciphertext, row.updated_at = ciphertext, now
            await self.session.flush()
            return row, False
        row = ProviderCredential(tenant_id=tenant_id, name=name, ciphertext=ciphertext, created_at=now, updated_at=now)
        self.session.add(row)
        try:
            await self.session.flush()
        except IntegrityError as exc:  # a concurrent PUT of the same name won; the session block rolls back
            raise Conflict(f"credential {name!r} is being set by another request") from exc
        return row, True

    async def list(self, tenant_id: uuid.UUID) -> builtins.list[CredentialInfo]:
        rows = await self.session.scalars(
            select(ProviderCredential)
            .where(ProviderCredential.tenant_id == tenant_id)
            .order_by(ProviderCredential.name)
        )
        out = []
        for row in rows:
            secret = self._open(row)
            out.append(CredentialInfo(row.name, secret.hosts if secret else (), row.created_at, row.updated_at))
        return out

    async def delete(self, tenant_id: uuid.UUID, name: str) -> bool:
        result = await self.session.execute(
            delete(ProviderCredential).where(ProviderCredential.tenant_id == tenant_id, ProviderCredential.name == name)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def resolve(self, tenant_id: uuid.UUID, name: str) -> Secret | None:
        row = await self._row(tenant_id, name)
        return self._open(row) if row is not None else None


def host_allowed(host: str, hosts: tuple[str, ...]) -> bool:
    """Whether a credential limited to ``hosts`` (``.example.com``: a domain) may go to ``host``."""
    host = host.lower().rstrip(".")
    return not hosts or any(host == h or (h.startswith(".") and host.endswith(h)) for h in hosts)


class TenantSecrets:
    """One call's secret source in ``parley serve``: the call's tenant's credentials, never the environment."""

    def __init__(self, db: Database, settings: Settings, tenant_id: uuid.UUID) -> None:
        self.db, self.settings, self.tenant_id = db, settings, tenant_id

    async def credential(self, name: str, host: str) -> str:
        try:
            cipher = cipher_for(self.settings)
        except CredentialsUnavailable as exc:
            raise CredentialError(f"credential {name!r}: {exc}") from None
        async with self.db.session() as s:
            secret = await CredentialRepo(s, cipher).resolve(self.tenant_id, name)
        if secret is None:
            raise CredentialError(f"no credential {name!r} in this tenant (PUT /v1/credentials/{name})")
        if not host_allowed(host, secret.hosts):
            raise CredentialError(f"credential {name!r} may not be sent to {host or 'this URL'}")
        return secret.value

    def env(self, name: str) -> str:
        raise CredentialError("the server's environment is not readable by agents; use a credential")
