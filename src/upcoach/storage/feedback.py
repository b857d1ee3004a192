"""Answer ratings (``answer_feedback``), joined with ``request_records`` for the quality figures per mode/model."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences, refused
from upcoach.storage.tables import AnswerFeedbackRow, RequestRecordRow, utc_now


@dataclass(frozen=True)
class RatingGroup:
    processing_mode: str
    model: str
    count: int
    average: float


class FeedbackRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(
        self, request_id: str, user_id: str, rating: int, comment: bytes | None, *, started_at: datetime
    ) -> tuple[AnswerFeedbackRow, bool] | None:
        """Insert or replace the one rating of ``request_id`` (True: inserted); ``created_at`` keeps the first time.
        None, and nothing written, when the user was erased at or after ``started_at`` (storage/fences.py)."""
        try:
            return await self._upsert(request_id, user_id, rating, comment, started_at)
        except IntegrityError:
            # Two first ratings raced and the other inserted: this one becomes the update.
            return await self._upsert(request_id, user_id, rating, comment, started_at)

    async def _upsert(
        self, request_id: str, user_id: str, rating: int, comment: bytes | None, started_at: datetime
    ) -> tuple[AnswerFeedbackRow, bool] | None:
        now = utc_now()
        table = AnswerFeedbackRow
        async with Fences(self._db).guarded([user_id]) as (conn, erased):
            if refused(erased, user_id, started_at):
                return None
            found = (await conn.execute(select(table.created_at).where(table.request_id == request_id))).first()
            created_at = now if found is None else found.created_at
            row = AnswerFeedbackRow(request_id=request_id, user_id=user_id, rating=rating, comment=comment,
                                    created_at=created_at, updated_at=now)  # fmt: skip
            if found is None:
                values = {"request_id": request_id, "user_id": user_id, "rating": rating, "comment": comment,
                          "created_at": now, "updated_at": now}  # fmt: skip
                await conn.execute(insert(table).values(**values))
                return row, True
            changes = {"rating": rating, "comment": comment, "updated_at": now}
            await conn.execute(update(table).where(table.request_id == request_id).values(**changes))
        return row, False

    async def summary(self, *, since: datetime | None = None) -> builtins.list[RatingGroup]:
        """``since`` bounds the rated requests' time (not the rating's): the quality of the answers given then."""
        record, feedback = RequestRecordRow, AnswerFeedbackRow
        query = (
            select(record.processing_mode, record.backend, func.count(), func.avg(feedback.rating))
            .join(record, record.id == feedback.request_id)
            .group_by(record.processing_mode, record.backend)
            .order_by(record.processing_mode, record.backend)
        )
        if since is not None:
            if since.utcoffset() is None:
                raise ValueError(f"since must be timezone-aware, got {since!r}")
            query = query.where(record.created_at >= since)
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [RatingGroup(mode, model, int(count), float(average)) for mode, model, count, average in rows]

    async def for_user(self, user_id: str) -> builtins.list[AnswerFeedbackRow]:
        query = select(AnswerFeedbackRow).where(AnswerFeedbackRow.user_id == user_id)
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query.order_by(AnswerFeedbackRow.created_at))).all())

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(AnswerFeedbackRow).where(AnswerFeedbackRow.user_id == user_id))
            return int(result.rowcount or 0)
