"""The storage connection against both embedded SQLite and the real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from upcoach.storage.database import POSTGRES_SETTINGS, SQLITE_BUSY_MS, Database, async_url
from upcoach.storage.fences import Fences
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import utc_now


def test_async_url_picks_the_async_driver() -> None:
    assert async_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert async_url("postgresql://u@127.0.0.1:5432/test") == "postgresql+asyncpg://u@127.0.0.1:5432/test"
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://127.0.0.1/test")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_ping_reaches_the_database(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}" if kind == "sqlite" else "postgresql://postgres@127.0.0.1:5432/test"
    db = Database(url)
    try:
        await db.ping()
        assert db.dialect == kind
    finally:
        await db.dispose()


async def test_ping_fails_for_an_unreachable_database() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(OSError):
            await db.ping()
    finally:
        await db.dispose()


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_MS
    finally:
        await db.dispose()


async def test_postgres_sessions_give_up_waiting_for_a_lock() -> None:
    db = Database("postgresql://postgres@127.0.0.1:5432/test")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("SHOW lock_timeout")).scalar() == POSTGRES_SETTINGS["lock_timeout"]
            assert (await conn.exec_driver_sql("SHOW statement_timeout")).scalar() == "5min"
    finally:
        await db.dispose()


async def test_concurrent_writers_on_sqlite_never_see_database_is_locked(tmp_path: Path) -> None:
    """Three "workers" (engines of their own on one file, as three server processes would have), each with many
    tasks writing records, erasing users and reading at once, while a long read (an export) holds its transaction
    open throughout: every operation succeeds. Without WAL the open read blocks every commit until the busy
    timeout runs out, and the writers fail with "database is locked"."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [Database(url) for _ in range(3)]
    await workers[0].migrate()

    async def work(db: Database, task: int) -> None:
        repository, fences = RequestRepository(db), Fences(db)
        for n in range(15):
            user = f"user-{(task + n) % 5}"
            record = RequestRecord(id=f"{task}-{n}", user_id=user, endpoint="hybrid", privacy_level="standard",
                                   decision="local", processing_mode="local", backend="llamacpp", outcome="ok",
                                   latency_ms=1.0)  # fmt: skip
            await repository.add_fenced([(record, utc_now())])
            await repository.add(replace(record, id=f"{task}-{n}-plain"))
            if n % 5 == 4:
                await fences.erect(user)
                await repository.delete_for_user(user)
            await repository.summary()

    try:
        async with workers[0].engine.connect() as export:
            await export.exec_driver_sql("BEGIN")
            await export.exec_driver_sql("SELECT count(*) FROM request_records")
            results = await asyncio.gather(
                *(work(db, task) for task in range(24) for db in [workers[task % 3]]), return_exceptions=True
            )
            await export.rollback()
        failures = [repr(result) for result in results if isinstance(result, BaseException)]
        assert failures == []
    finally:
        for db in workers:
            await db.dispose()
