"""Store: migrations, tenants, API keys and agents on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from parley.store.agents import AgentRepo
from parley.store.db import Database, upgrade
from parley.store.errors import Conflict
from parley.store.models import Base
from parley.store.tenants import TenantRepo
from tests.support.store import db, new_tenant

__all__ = ["db"]
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_migration_matches_models(db: Database) -> None:
    await db.migrate()  # a second run is a no-op
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
        )
    assert diff == []


async def test_cli_upgrade(tmp_path: Path) -> None:
    # The synchronous helper runs its own event loop, as `parley db upgrade` does.
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    await asyncio.to_thread(upgrade, url)
    await asyncio.to_thread(upgrade, url)
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
        assert (version, mode, fks) == ("0011", "wal", 1)
    finally:
        await database.close()


async def test_tenants(db: Database) -> None:
    name = f"acme-{uuid.uuid4().hex}"
    async with db.session() as s:
        a = await TenantRepo(s).get_or_create(name)
    async with db.session() as s:
        repo = TenantRepo(s)
        assert (await repo.get_or_create(name)).id == a.id
        got = await repo.get(a.id)
        assert got is not None and got.name == name and got.created_at.tzinfo is not None
        assert (await repo.by_name(name)) is not None
        assert await repo.by_name("nobody-" + name) is None
        assert await repo.get(uuid.uuid4()) is None


async def test_session_rolls_back_on_error(db: Database) -> None:
    name = f"rollback-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await TenantRepo(s).get_or_create(name)
            raise RuntimeError("boom")
    async with db.session() as s:
        assert await TenantRepo(s).by_name(name) is None


async def test_keys(db: Database) -> None:
    from parley.store.keys import ApiKeyRepo

    a, b = await new_tenant(db), await new_tenant(db)
    async with db.session() as s:
        key, secret = await ApiKeyRepo(s).create(a, "ci", "editor", scopes=["agents:write"])
    assert secret.startswith("pk_") and len(secret) > 40
    assert key.prefix == secret[:12] and key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    with pytest.raises(ValueError):
        async with db.session() as s:
            await ApiKeyRepo(s).create(a, "bad", "root")

    # The secret is in no column of any table.
    async with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in (await conn.execute(text(f"SELECT * FROM {table.name}"))).all():
                assert not any(secret in str(v) for v in row), table.name

    async with db.session() as s:
        repo = ApiKeyRepo(s)
        found = await repo.authenticate(secret)
        assert found is not None and found.id == key.id and found.tenant_id == a
        assert found.role == "editor" and found.scopes == ["agents:write"] and found.last_used_at is not None
        assert await repo.authenticate(secret + "x") is None
        assert [k.id for k in await repo.list(a)] == [key.id]
        # Tenant B can neither see nor revoke A's key.
        assert await repo.list(b) == []
        assert await repo.get(b, key.id) is None
        assert await repo.revoke(b, key.id) is False
        assert await repo.authenticate(secret) is not None
    async with db.session() as s:
        repo = ApiKeyRepo(s)
        assert await repo.revoke(a, key.id) is True
        assert await repo.revoke(a, key.id) is False
        assert await repo.revoke(a, uuid.uuid4()) is False
    async with db.session() as s:
        repo = ApiKeyRepo(s)
        assert await repo.authenticate(secret) is None
        listed = await repo.list(a)
        assert listed[0].revoked_at is not None


async def test_agents(db: Database) -> None:
    a = await new_tenant(db)
    doc1, doc2 = {"name": "reception", "prompt": "one"}, {"name": "reception", "prompt": "two"}
    async with db.session() as s:
        agent = await AgentRepo(s).create(a, "reception", doc1)
        assert agent.version == 1
    with pytest.raises(Conflict):
        async with db.session() as s:
            await AgentRepo(s).create(a, "reception", doc2)
    async with db.session() as s:
        repo = AgentRepo(s)
        other = await repo.create(a, "sales", doc1)
        updated = await repo.update(a, agent.id, "front-desk", doc2)
        assert updated is not None and updated.version == 2 and updated.name == "front-desk"
        with pytest.raises(Conflict):
            await repo.update(a, other.id, "front-desk", doc1)
    async with db.session() as s:
        repo = AgentRepo(s)
        got = await repo.get(a, agent.id)
        assert got is not None and got.document == doc2 and got.version == 2
        assert got.updated_at >= got.created_at
        assert (await repo.by_name(a, "front-desk")) is not None and await repo.by_name(a, "reception") is None
        assert [v.version for v in await repo.versions(a, agent.id)] == [1, 2]
        v1 = await repo.version(a, agent.id, 1)
        assert v1 is not None and v1.document == doc1
        assert await repo.version(a, agent.id, 3) is None
        assert [x.name for x in await repo.list(a)] == ["front-desk", "sales"]
        assert [x.name for x in await repo.list(a, limit=1, offset=1)] == ["sales"]
        # The freed name can be reused.
        await repo.create(a, "reception", doc1)
    async with db.session() as s:
        repo = AgentRepo(s)
        assert await repo.delete(a, agent.id) is True
        assert await repo.delete(a, agent.id) is False
        assert await repo.get(a, agent.id) is None
        assert await repo.versions(a, agent.id) == []
        assert [v.version for v in await repo.versions(a, other.id)] == [1]  # other agents keep theirs


async def test_agents_tenant_isolation(db: Database) -> None:
    a, b = await new_tenant(db), await new_tenant(db)
    doc = {"name": "x"}
    async with db.session() as s:
        agent = await AgentRepo(s).create(a, "shared-name", doc)
        # Names are unique per tenant only.
        await AgentRepo(s).create(b, "shared-name", doc)
    async with db.session() as s:
        repo = AgentRepo(s)
        assert await repo.get(b, agent.id) is None
        assert [x.id for x in await repo.list(b)] != [agent.id]
        by_name = await repo.by_name(b, "shared-name")
        assert by_name is not None and by_name.id != agent.id
        assert await repo.update(b, agent.id, "stolen", {"name": "evil"}) is None
        assert await repo.versions(b, agent.id) == []
        assert await repo.version(b, agent.id, 1) is None
        assert await repo.delete(b, agent.id) is False
    async with db.session() as s:
        got = await AgentRepo(s).get(a, agent.id)
        assert got is not None and got.version == 1 and got.name == "shared-name" and got.document == doc


async def test_workers_migrating_one_fresh_postgres_database_at_once_all_start() -> None:
    """Several workers started together (compose, a Kubernetes rollout) migrate under one advisory lock: one
    creates the schema, the others wait and find it at head (without the lock they collided on alembic's table)."""
    import secrets

    import asyncpg

    from tests.support.store import PG_ADMIN

    name = f"parley_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    workers = [Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}") for _ in range(3)]
    try:
        await asyncio.gather(*(w.migrate() for w in workers))
        async with workers[0].session() as s:
            assert (await s.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one() == 1
    finally:
        await asyncio.gather(*(w.close() for w in workers))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
