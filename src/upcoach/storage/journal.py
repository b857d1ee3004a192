"""Journal entry rows. The repository moves ciphertext only: encryption lives in coaching/journal.py."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import delete, select, update

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences
from upcoach.storage.tables import JournalEntryRow


class JournalRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: JournalEntryRow, *, started_at: datetime) -> bool:
        """Insert the entry, unless the user's data was erased at or after ``started_at`` (False: refused)."""
        return await Fences(self._db).insert(row, started_at=started_at)

    async def update(self, entry_id: str, user_id: str, payload: bytes, insight_status: str) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(JournalEntryRow)
                .where(JournalEntryRow.id == entry_id, JournalEntryRow.user_id == user_id)
                .values(payload=payload, insight_status=insight_status)
            )

    async def page(self, user_id: str, *, limit: int, offset: int) -> builtins.list[JournalEntryRow]:
        """Newest recording first; id breaks ties so pages never overlap."""
        query = (
            select(JournalEntryRow)
            .where(JournalEntryRow.user_id == user_id)
            .order_by(JournalEntryRow.recorded_at.desc(), JournalEntryRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query)).all())

    async def between(
        self, user_id: str, start: datetime | None = None, end: datetime | None = None
    ) -> builtins.list[JournalEntryRow]:
        """Oldest first; ``start`` inclusive, ``end`` exclusive."""
        query = select(JournalEntryRow).where(JournalEntryRow.user_id == user_id)
        if start is not None:
            query = query.where(JournalEntryRow.recorded_at >= start)
        if end is not None:
            query = query.where(JournalEntryRow.recorded_at < end)
        query = query.order_by(JournalEntryRow.recorded_at, JournalEntryRow.id)
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query)).all())

    async def delete(self, entry_id: str, user_id: str) -> bool:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                delete(JournalEntryRow).where(JournalEntryRow.id == entry_id, JournalEntryRow.user_id == user_id)
            )
            return bool(result.rowcount)

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(JournalEntryRow).where(JournalEntryRow.user_id == user_id))
            return int(result.rowcount or 0)
