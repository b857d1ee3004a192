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
from collections.abc import Sequence
from dataclasses import dataclass
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


async def _joined(db: Database, since: datetime | None) -> list[tuple[dict[str, Any], float]]:
    """Every record with a routing log, with its reward (rating, else the signals and the next record's rephrase)."""
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
        )
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
    out = []
    for user_rows in by_user.values():
        for i, row in enumerate(user_rows):
            following = user_rows[i + 1].routing if i + 1 < len(user_rows) else None
            rephrased = bool(following and following.get("rephrase"))
            value = reward(row.rating, row.fallback_used, row.outcome, row.finish_reason, rephrased)
            out.append((row.routing or {}, value))
    return out


async def logged_rows(db: Database, since: datetime | None = None) -> list[Logged]:
    size = len(dense_names())
    out = []
    for routing, value in await _joined(db, since):
        vector = routing.get("vector")
        if routing.get("forced", True) or not vector or len(vector) != size or routing.get("side") is None:
            continue
        out.append(
            Logged(
                np.asarray(vector, dtype=np.float64),
                float(routing.get("text_logit", 0.0)),
                str(routing["side"]),
                value,
                float(routing.get("propensity", 1.0)),
            )
        )
    return out


@dataclass(frozen=True)
class Arm:
    version: str
    good: int  # free choices whose outcome was good (the reward above)
    local: int  # free choices kept local
    n: int


async def arm_outcomes(db: Database, versions: Sequence[str], since: datetime | None = None) -> list[Arm]:
    """Per router version: the free choices it made for users who opted in to analytics, and how they went."""
    rows = await _joined(db, since)
    counts = {version: [0, 0, 0] for version in versions}
    for routing, value in rows:
        version = routing.get("router")
        if version in counts and not routing.get("forced", True) and routing.get("vector"):
            counts[version][0] += int(value >= 0.5)
            counts[version][1] += int(routing.get("side") == "local")
            counts[version][2] += 1
    return [Arm(version, *counts[version]) for version in versions]
