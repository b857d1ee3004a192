"""FeedbackRepository.summary on SQLite and PostgreSQL: averages and counts per processing mode and model, bounded
by when the rated answers were given (the admin dashboard's period)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from upcoach.storage.database import Database
from upcoach.storage.feedback import FeedbackRepository, RatingGroup
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import utc_now

pytestmark = pytest.mark.asyncio(loop_scope="session")

BASE = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def record(request_id: str, hours: int, mode: str, backend: str) -> RequestRecord:
    return RequestRecord(
        id=request_id, user_id="alice", created_at=BASE + timedelta(hours=hours), endpoint="hybrid",
        privacy_level="private", decision=mode, processing_mode=mode, backend=backend, outcome="ok", latency_ms=10.0,
    )  # fmt: skip


@pytest.fixture
async def repository(migrated_db: Database) -> FeedbackRepository:
    await RequestRepository(migrated_db).add_many(
        [
            record("old", -48, "local", "llamacpp"),
            record("a", 0, "local", "llamacpp"),
            record("b", 1, "local", "llamacpp"),
            record("c", 2, "cloud", "cloud:gpt"),
            record("unrated", 3, "hybrid", "cloud:gpt"),
        ]
    )
    feedback = FeedbackRepository(migrated_db)
    for request_id, rating in (("old", 1), ("a", 5), ("b", 2), ("c", 4), ("c", 3)):
        await feedback.upsert(request_id, "alice", rating, None, started_at=utc_now())
    return feedback


async def test_summary_groups_by_mode_and_model_within_the_period(repository: FeedbackRepository) -> None:
    assert await repository.summary() == [
        RatingGroup("cloud", "cloud:gpt", 1, 3.0),
        RatingGroup("local", "llamacpp", 3, pytest.approx(8 / 3)),  # type: ignore[arg-type]
    ]
    # The bound is on the answer's time, in any zone: 11:00 UTC written as 20:00 in Tokyo.
    tokyo = (BASE - timedelta(hours=1)).astimezone(timezone(timedelta(hours=9)))
    assert await repository.summary(since=tokyo) == [
        RatingGroup("cloud", "cloud:gpt", 1, 3.0),
        RatingGroup("local", "llamacpp", 2, 3.5),
    ]
    assert await repository.summary(since=BASE + timedelta(hours=1, minutes=30)) == [
        RatingGroup("cloud", "cloud:gpt", 1, 3.0)
    ]
    assert await repository.summary(since=BASE + timedelta(days=1)) == []


async def test_a_naive_since_is_refused(repository: FeedbackRepository) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await repository.summary(since=datetime(2025, 3, 10, 12, 0))
