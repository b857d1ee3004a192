"""Answer ratings (``answer_feedback``), joined with ``request_records`` for the quality figures per mode/model."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from upcoach.storage.database import Database
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
        self, request_id: str, user_id: str, rating: int, comment: bytes | None
    ) -> tuple[AnswerFeedbackRow, bool]:
        """Insert or replace the one rating of ``request_id`` (True: inserted); ``created_at`` keeps the first time."""
        try:
            return await self._upsert(request_id, user_id, rating, comment)
        except IntegrityError:
            # Two first ratings raced and the other inserted: this one becomes the update.
            return await self._upsert(request_id, user_id, rating, comment)

    async def _upsert(
        self, request_id: str, user_id: str, rating: int, comment: bytes | None
    ) -> tuple[AnswerFeedbackRow, bool]:
        now = utc_now()
        async with self._db.sessions.begin() as session:
            row = await session.get(AnswerFeedbackRow, request_id)
            if row is None:
                row = AnswerFeedbackRow(
                    request_id=request_id, user_id=user_id, rating=rating, comment=comment, created_at=now,
                    updated_at=now,
                )  # fmt: skip
                session.add(row)
                return row, True
            row.rating, row.comment, row.updated_at = rating, comment, now
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
