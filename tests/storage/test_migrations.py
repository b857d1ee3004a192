"""Alembic migrations shipped in the package, run through ``Database.migrate`` on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from upcoach.storage.database import Database, alembic_config
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import FTS_OBJECTS, Base, include_name

# The fixtures' engines live on the session event loop, so the tests must run on it too.
on_session_loop = pytest.mark.asyncio(loop_scope="session")

# Every table the models declare, and the newest revision: each new revision must extend the single line.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
TABLES = {"alembic_version", *Base.metadata.tables}


async def _versions(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    # SQLite lists the strategies' FTS5 table and its shadow tables too: they are accounted for, not models.
    return names - FTS_OBJECTS


@on_session_loop
async def test_migrate_twice_is_idempotent_and_keeps_data(db: Database) -> None:
    assert await _tables(db) == set()
    await db.migrate()
    assert await _tables(db) == TABLES
    assert await _versions(db) == [HEAD]

    repo = RequestRepository(db)
    record = RequestRecord(
        id="r1",
        endpoint="openai",
        privacy_level="standard",
        decision="local",
        processing_mode="local",
        backend="llamacpp",
        outcome="ok",
        latency_ms=12.5,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    await repo.add(record)

    await db.migrate()
    assert await _versions(db) == [HEAD]
    assert await repo.get("r1") == record


@on_session_loop
async def test_concurrent_migrations_do_not_collide(database_url: str, db: Database) -> None:
    # Several workers starting at once each call migrate(); the lock makes the later ones find head already.
    others = [Database(database_url) for _ in range(3)]
    try:
        await asyncio.gather(db.migrate(), *(other.migrate() for other in others))
    finally:
        for other in others:
            await other.dispose()
    assert await _versions(db) == [HEAD]


@on_session_loop
async def test_migrated_schema_matches_the_tables(migrated_db: Database) -> None:
    def diff(sync: Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"include_name": include_name})
        return list(compare_metadata(context, Base.metadata))

    async with migrated_db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("request_records"))
    assert {index["name"]: index["column_names"] for index in indexes} == {
        "ix_request_records_created_at": ["created_at"],
        "ix_request_records_user_id_created_at": ["user_id", "created_at"],
    }


@on_session_loop
async def test_downgrade_and_standalone_url_run(database_url: str, migrated_db: Database) -> None:
    """The path used by the alembic command API without a shared connection (env.py opens its own engine)."""
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # env.py calls asyncio.run, which needs a thread without a running event loop.
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await _tables(migrated_db) == {"alembic_version"}
    assert await _versions(migrated_db) == []
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _tables(migrated_db) == TABLES
    assert await _versions(migrated_db) == [HEAD]


def test_history_is_one_line_ending_at_head() -> None:
    # Two heads would make "upgrade head" fail at every start: new revisions must extend the single line.
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    revisions = [rev.revision for rev in script.walk_revisions()]
    assert revisions == [f"{n:04d}" for n in range(len(revisions), 0, -1)]
    assert HEAD == "0012"


@on_session_loop
async def test_keys_created_as_coach_become_service_keys(database_url: str, db: Database) -> None:
    """Before 0007 the coach role was the app's backend acting for its users: such keys keep that power as
    service keys, and the coach role now means a human coach bound by grants."""
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, config, "0006")
    created = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.engine.begin() as conn:
        for key_id, role in (("k-coach", "coach"), ("k-user", "user"), ("k-admin", "admin")):
            await conn.execute(
                text("INSERT INTO api_keys (id, user_id, role, secret_hash, created_at) VALUES (:i, :u, :r, :h, :c)"),
                {"i": key_id, "u": f"owner-{role}", "r": role, "h": "0" * 64, "c": created},
            )
    await asyncio.to_thread(command.upgrade, config, "head")
    async with db.engine.connect() as conn:
        roles = dict((await conn.execute(text("SELECT id, role FROM api_keys"))).all())
    assert roles == {"k-coach": "service", "k-user": "user", "k-admin": "admin"}


@pytest.mark.parametrize("url", ["sqlite:///unused.db", "postgresql://unused@127.0.0.1/unused"])
def test_offline_mode_prints_the_ddl(url: str) -> None:
    buffer = io.StringIO()
    config = alembic_config()
    config.output_buffer = buffer
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head", sql=True)
    ddl = buffer.getvalue()
    assert "CREATE TABLE request_records" in ddl
    assert "CREATE INDEX ix_request_records_user_id_created_at ON request_records (user_id, created_at)" in ddl
    assert "CREATE TABLE audit_events" in ddl and "CONSTRAINT uq_audit_events_prev_hmac UNIQUE (prev_hmac)" in ddl
