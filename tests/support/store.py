"""Two real backends for the store tests: SQLite in a temp dir and a fresh PostgreSQL database."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from parley.store.db import Database
from parley.store.tenants import TenantRepo

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    """A migrated database per backend, shared by a module's tests (each test uses its own tenants)."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("store") / "parley.db"
        database = Database(f"sqlite+aiosqlite:///{path}")
        await database.migrate()
        yield database
        await database.close()
        return
    name = f"parley_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        database = Database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}")
        try:
            await database.migrate()
            yield database
        finally:
            await database.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def new_tenant(db: Database) -> uuid.UUID:
    async with db.session() as s:
        tenant = await TenantRepo(s).get_or_create(f"t-{uuid.uuid4().hex}")
        return tenant.id
