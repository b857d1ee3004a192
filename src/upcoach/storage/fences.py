"""Erasure fences: after a user's data is erased, writes of things that started before the erasure are refused.

A request that is still running, a record waiting in a writer's queue or in another process's spool, a journal
entry whose insight is being written: each of them would otherwise be written after the erasure's delete and
bring the user's data back. The erasure first sets the fence (``erect``: user id and the time), then deletes;
every per-user writer inserts through ``guarded``, which reads the fences of its users and refuses what started
at or before ``erased_at``.

Check and insert must not interleave with an erasure, or a row checked before the fence and committed after the
delete would survive. On PostgreSQL ``guarded`` holds a shared advisory lock per user for its transaction and
``erect`` takes the same lock exclusively, so an erasure waits for writes in flight (then deletes what they
wrote) and a write waits for an erasure's fence (then sees it). SQLite has one writer at a time: ``guarded``
opens its transaction with ``BEGIN IMMEDIATE``, so the check and the insert happen under the write lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from upcoach.storage.database import Database
from upcoach.storage.tables import ErasureFenceRow, utc_now

_LOCK_CONTEXT = b"upcoach.erasure-fence:"
Erased = dict[str, datetime]  # user id -> when their data was last erased


def lock_key(user_id: str) -> int:
    """The user's advisory lock number (signed 64-bit, as PostgreSQL wants it)."""
    digest = hashlib.sha256(_LOCK_CONTEXT + user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def refused(erased: dict[str, datetime], user_id: str | None, started_at: datetime) -> bool:
    """True when ``user_id`` was erased at or after ``started_at``: the write belongs to erased data."""
    if user_id is None or user_id not in erased:
        return False
    return started_at <= erased[user_id]


class Fences:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def erect(self, user_id: str) -> datetime:
        """Set (or move forward) the user's fence to now, once every guarded write in flight for them is done.
        Call it before deleting the user's data."""
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        async with self._db.engine.begin() as conn:
            await self._lock(conn, [user_id], exclusive=True)
            # Read the clock once the lock is held: every request that started while the erasure waited is fenced.
            now = utc_now()
            statement = dialect.insert(ErasureFenceRow).values(user_id=user_id, erased_at=now)
            await conn.execute(statement.on_conflict_do_update(index_elements=["user_id"], set_={"erased_at": now}))
        return now

    async def prune(self, before: datetime) -> int:
        """Forget the fences of erasures before ``before``: past the horizon no write that started before them can
        still arrive (requests end in minutes, spooled records are written or dropped long before). Returns how
        many went."""
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(ErasureFenceRow).where(ErasureFenceRow.erased_at < before))
            return int(result.rowcount or 0)

    async def erased_at(self, user_id: str) -> datetime | None:
        async with self._db.engine.connect() as conn:
            return (await self._read(conn, [user_id])).get(user_id)

    async def insert(self, row: Any, *, started_at: datetime) -> bool:
        """Insert one row of a per-user table (it has ``user_id``), unless that user's data was erased at or after
        ``started_at``: False, nothing written."""
        values = {column.key: getattr(row, column.key) for column in row.__table__.columns}
        async with self.guarded([row.user_id]) as (conn, erased):
            if refused(erased, row.user_id, started_at):
                return False
            await conn.execute(insert(type(row)).values(**values))
        return True

    @asynccontextmanager
    async def guarded(self, user_ids: Iterable[str | None]) -> AsyncIterator[tuple[AsyncConnection, Erased]]:
        """A write transaction that no erasure of ``user_ids`` can interleave with; yields the connection and the
        fences of those users (user id -> erased_at) to check with ``refused`` before inserting."""
        users = sorted({user for user in user_ids if user is not None})
        async with self._db.engine.begin() as conn:
            await self._lock(conn, users, exclusive=False)
            yield conn, await self._read(conn, users)

    async def _lock(self, conn: AsyncConnection, users: list[str], *, exclusive: bool) -> None:
        if self._db.dialect == "sqlite":
            # The sqlite3 driver would begin only at the first write, after the fence was read.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        if not users:
            return
        if exclusive:
            # Erasures lock one user each, so no two of them can wait on each other in a cycle.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(users[0])})
            return
        # A batch of records names many users: every shared lock in one round trip (shared locks never conflict
        # with each other, and an erasure holds only its one key, so the order cannot deadlock).
        await conn.execute(
            text("SELECT pg_advisory_xact_lock_shared(key) FROM unnest(CAST(:keys AS bigint[])) AS key"),
            {"keys": [lock_key(user) for user in users]},
        )

    @staticmethod
    async def _read(conn: AsyncConnection, users: list[str]) -> dict[str, datetime]:
        if not users:
            return {}
        rows = await conn.execute(
            select(ErasureFenceRow.user_id, ErasureFenceRow.erased_at).where(ErasureFenceRow.user_id.in_(users))
        )
        return {user: erased for user, erased in rows.all()}
