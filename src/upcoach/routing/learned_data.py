"""Logged free choices from the database, joined with the outcome signals that arrived later.

A request record (``request_records.routing``) holds the vector, the text logit, the side, forced or free and the
propensity; the outcome is joined by request id and user:

- a rating (``answer_feedback``): 4-5 is good (reward 1), 1-3 is not (0);
- without a rating, the signals the engine logs: a fallback, an error or a cut answer, or the user's next request
  rephrasing this one (``routing.rephrase`` on the next record) make it 0; otherwise 1 ("no complaint").

Only free choices of users who opted in to analytics carry a vector; everything else is skipped. Nothing here
reads or needs message text.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from upcoach.routing.learned import dense_names
from upcoach.routing.learned_eval import Logged
from upcoach.storage.database import Database
from upcoach.storage.tables import AnswerFeedbackRow, RequestRecordRow

BAD_FINISH = ("error", "cancelled", "content_filter")


def reward(rating: int | None, fallback: bool, outcome: str, finish: str | None, rephrased: bool) -> float:
    if rating is not None:
        return 1.0 if rating >= 4 else 0.0
    if fallback or outcome != "ok" or (finish or "") in BAD_FINISH or rephrased:
        return 0.0
    return 1.0


async def logged_rows(db: Database, since: datetime | None = None) -> list[Logged]:
    record, feedback = RequestRecordRow, AnswerFeedbackRow
    query = (
        select(
            record.id,
            record.user_id,
            record.created_at,
            record.routing,
            record.fallback_used,
            record.outcome,
            record.finish_reason,
            feedback.rating,
        )  # fmt: skip
        .outerjoin(feedback, feedback.request_id == record.id)
        .where(record.routing.is_not(None))
        .order_by(record.user_id, record.created_at)
    )
    if since is not None:
        query = query.where(record.created_at >= since)
    async with db.sessions() as session:
        rows = (await session.execute(query)).all()
    by_user: dict[str | None, list[Any]] = defaultdict(list)
    for row in rows:
        by_user[row.user_id].append(row)
    size = len(dense_names())
    out = []
    for user_rows in by_user.values():
        for i, row in enumerate(user_rows):
            routing = row.routing or {}
            vector = routing.get("vector")
            if routing.get("forced", True) or not vector or len(vector) != size or routing.get("side") is None:
                continue
            following = user_rows[i + 1].routing if i + 1 < len(user_rows) else None
            rephrased = bool(following and following.get("rephrase"))
            value = reward(row.rating, row.fallback_used, row.outcome, row.finish_reason, rephrased)
            out.append(Logged(np.asarray(vector, dtype=np.float64), float(routing.get("text_logit", 0.0)),
                              str(routing["side"]), value, float(routing.get("propensity", 1.0))))  # fmt: skip
    return out
