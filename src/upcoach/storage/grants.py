"""Coach grant rows (``coach_grants``): a client's consent that one coach may read some of their data."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences
from upcoach.storage.tables import CoachGrantRow


def _live(now: datetime) -> tuple[object, ...]:
    return CoachGrantRow.revoked_at.is_(None), or_(CoachGrantRow.expires_at.is_(None), CoachGrantRow.expires_at > now)


class GrantRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: CoachGrantRow, *, started_at: datetime) -> bool:
        """Insert the grant, unless the user's data was erased at or after ``started_at`` (False: refused): a
        grant given while an erasure runs must not outlive it."""
        return await Fences(self._db).insert(row, started_at=started_at)

    async def given_by(self, user_id: str) -> builtins.list[CoachGrantRow]:
        """Every grant the user gave, revoked and expired ones included, newest first."""
        query = (
            select(CoachGrantRow)
            .where(CoachGrantRow.user_id == user_id)
            .order_by(CoachGrantRow.created_at.desc(), CoachGrantRow.id)
        )
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query)).all())

    async def live_for(self, coach_id: str, now: datetime, user_id: str | None = None) -> builtins.list[CoachGrantRow]:
        """The grants naming this coach that work at ``now`` (of one client, or of every client)."""
        query = select(CoachGrantRow).where(CoachGrantRow.coach_id == coach_id, *_live(now))  # type: ignore[arg-type]
        if user_id is not None:
            query = query.where(CoachGrantRow.user_id == user_id)
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query.order_by(CoachGrantRow.created_at))).all())

    async def count_live(self, user_id: str, now: datetime) -> int:
        query = select(func.count()).select_from(CoachGrantRow).where(CoachGrantRow.user_id == user_id, *_live(now))  # type: ignore[arg-type]
        async with self._db.sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def revoke(self, grant_id: str, user_id: str, when: datetime) -> tuple[CoachGrantRow | None, bool]:
        """Revoke one of the user's grants: (the grant or None if not theirs, whether this call revoked it). A
        revoked grant keeps its first revocation time."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(CoachGrantRow)
                .where(CoachGrantRow.id == grant_id, CoachGrantRow.user_id == user_id)
                .where(CoachGrantRow.revoked_at.is_(None))
                .values(revoked_at=when)
                .execution_options(synchronize_session=False)
            )
            query = select(CoachGrantRow).where(CoachGrantRow.id == grant_id, CoachGrantRow.user_id == user_id)
            return (await session.scalars(query)).one_or_none(), bool(result.rowcount)  # type: ignore[attr-defined]

    async def delete_for_user(self, user_id: str) -> int:
        """Erasure: the grants the user gave (grants naming them as a coach belong to their clients)."""
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(CoachGrantRow).where(CoachGrantRow.user_id == user_id))
            return int(result.rowcount or 0)
