"""Storage fixtures: every database test runs against embedded SQLite and the real local PostgreSQL.

PostgreSQL runs are isolated in a throwaway database created for this test session (random name) and dropped at
the end; each test starts from an empty schema in it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from upcoach.storage.database import Database, async_url

# The server's maintenance database: only used to create and drop the per-session one.
POSTGRES_ADMIN_URL = os.environ.get("UPCOACH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _execute_autocommit(url: str, *statements: str) -> None:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """URL of a fresh database, ``upcoach_test_<hex>``, that lives for this test session."""
    name = f"upcoach_test_{secrets.token_hex(6)}"
    await _execute_autocommit(POSTGRES_ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE: a connection leaked by a failing test must not keep the database alive.
        await _execute_autocommit(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'upcoach.db'}"
    # Looked up lazily so that selecting only the SQLite cases (-k sqlite) needs no PostgreSQL server.
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An empty, not yet migrated database."""
    if make_url(database_url).get_backend_name() == "postgresql":
        await _execute_autocommit(database_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def migrated_db(db: Database) -> Database:
    await db.migrate()
    return db
