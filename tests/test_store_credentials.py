"""Tenants' provider credentials in the store (SQLite and PostgreSQL): encrypted, bound to their row, rotatable."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import update

from parley.config import Settings
from parley.services.secrets import CredentialError
from parley.store.credentials import (
    CredentialRepo,
    CredentialsUnavailable,
    TenantSecrets,
    _read_or_create_key,
    cipher_for,
    host_allowed,
)
from parley.store.db import Database
from parley.store.models import ProviderCredential

from .support.store import db, new_tenant

__all__ = ["db"]
pytestmark = pytest.mark.asyncio(loop_scope="module")
VALUE = "sk-store-test-0123456789"


def settings(tmp_path: Path, key: str | None = None) -> Settings:
    env = {"data_dir": tmp_path} | ({"credentials_key": key} if key else {})
    return Settings(**env)  # type: ignore[arg-type]


async def test_values_are_encrypted_and_bound_to_their_tenant_and_name(db: Database, tmp_path: Path) -> None:
    cipher = cipher_for(settings(tmp_path))
    a, b = await new_tenant(db), await new_tenant(db)
    async with db.session() as s:
        repo = CredentialRepo(s, cipher)
        _, created = await repo.set(a, "openai", VALUE, ("api.openai.com",))
        assert created
        await repo.set(b, "other", "sk-b-0123456789")
    async with db.session() as s:
        repo = CredentialRepo(s, cipher)
        row = await repo._row(a, "openai")
        assert row is not None and VALUE not in row.ciphertext
        secret = await repo.resolve(a, "openai")
        assert secret is not None and secret.value == VALUE and secret.hosts == ("api.openai.com",)
        assert await repo.resolve(b, "openai") is None  # another tenant's name space
        # a ciphertext copied into another tenant's row does not decrypt as valid there
        await s.execute(
            update(ProviderCredential)
            .where(ProviderCredential.tenant_id == b, ProviderCredential.name == "other")
            .values(ciphertext=row.ciphertext)
        )
        assert await repo.resolve(b, "other") is None
        assert [i.name for i in await repo.list(a)] == ["openai"]
        assert await repo.delete(a, "openai") and not await repo.delete(a, "openai")


async def test_the_tenant_source_checks_hosts_and_never_reads_the_environment(db: Database, tmp_path: Path) -> None:
    conf = settings(tmp_path)
    tenant = await new_tenant(db)
    async with db.session() as s:
        await CredentialRepo(s, cipher_for(conf)).set(tenant, "k", VALUE, (".openai.azure.com",))
    source = TenantSecrets(db, conf, tenant)
    assert await source.credential("k", "me.openai.azure.com") == VALUE
    for host in ("evil.example", "openai.azure.com.evil.example", ""):
        with pytest.raises(CredentialError, match="may not be sent") as info:
            await source.credential("k", host)
        assert VALUE not in str(info.value)
    with pytest.raises(CredentialError, match="no credential 'missing'"):
        await source.credential("missing", "api.openai.com")
    os.environ["F1_STORE_TEST"] = VALUE
    try:
        with pytest.raises(CredentialError, match="environment is not readable"):
            source.env("F1_STORE_TEST")
    finally:
        del os.environ["F1_STORE_TEST"]


async def test_keys_rotate_and_a_wrong_key_is_a_clear_error(db: Database, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    tenant = await new_tenant(db)
    async with db.session() as s:
        await CredentialRepo(s, cipher_for(settings(tmp_path, old))).set(tenant, "k", VALUE)
    rotated = cipher_for(settings(tmp_path, f"{new},{old}"))  # the new key encrypts, the old one still decrypts
    async with db.session() as s:
        secret = await CredentialRepo(s, rotated).resolve(tenant, "k")
        assert secret is not None and secret.value == VALUE
    async with db.session() as s:
        assert await CredentialRepo(s, cipher_for(settings(tmp_path, new))).resolve(tenant, "k") is None
    with pytest.raises(CredentialsUnavailable, match="PARLEY_CREDENTIALS_KEY") as info:
        cipher_for(settings(tmp_path, "not-a-fernet-key"))
    assert "not-a-fernet-key" not in str(info.value)


async def test_the_generated_key_is_private_and_the_same_for_every_worker(tmp_path: Path) -> None:
    path = tmp_path / "data" / "credentials.key"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(_read_or_create_key(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and Fernet(keys[0].encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["credentials.key"]  # no temporary files left


async def test_host_limits() -> None:
    assert host_allowed("anything.example", ())
    assert host_allowed("API.OpenAI.com.", ("api.openai.com",))
    assert not host_allowed("api.openai.com.evil.example", ("api.openai.com",))
    assert host_allowed("x.y.example.com", (".example.com",)) and not host_allowed("example.com", (".example.com",))
