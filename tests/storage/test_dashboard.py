"""DashboardRepository against SQLite and PostgreSQL: time buckets, shares, events and nearest-rank percentiles
checked against values computed by hand from a known set of rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from upcoach.storage.dashboard import DashboardRepository, LatencyPercentiles
from upcoach.storage.database import Database
from upcoach.storage.requests import RequestRecord, RequestRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")

BASE = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def record(request_id: str, minutes: int, mode: str, latency: float, **fields: object) -> RequestRecord:
    values: dict[str, object] = {
        "endpoint": "hybrid",
        "privacy_level": "private",
        "decision": "local" if mode == "local" else "cloud",
        "processing_mode": mode,
        "backend": "llamacpp" if mode == "local" else "cloud",
        "outcome": "ok",
        "latency_ms": latency,
        "user_id": "alice",
        **fields,
    }
    return RequestRecord(id=request_id, created_at=BASE + timedelta(minutes=minutes), **values)  # type: ignore[arg-type]


# Hour 12:00: three local (one a breaker fallback), one cloud. Hour 13:00: one cloud error, one local.
# The day before (outside a 24 h window from 14:00): one cloud.
ROWS = [
    record("a", 0, "local", 100, cloud_cost_equivalent_usd=0.004),
    record("b", 10, "local", 300, cloud_cost_equivalent_usd=0.002),
    record(
        "c",
        20,
        "local",
        200,
        fallback_used=True,
        reasons=["cloud circuit breaker open: answered locally"],
        cloud_cost_equivalent_usd=0.001,
    ),  # fmt: skip
    record("d", 30, "cloud", 900, cost_usd=0.003, cloud_cost_equivalent_usd=0.003),
    record("e", 70, "cloud", 50, outcome="error", error_code="backend_timeout"),
    record("f", 80, "local", 400, cloud_cost_equivalent_usd=0.005),
    record("old", -24 * 60, "cloud", 1000, cost_usd=1.0, cloud_cost_equivalent_usd=1.0),
]
NOW = BASE + timedelta(hours=2)


@pytest.fixture
async def repository(migrated_db: Database) -> DashboardRepository:
    await RequestRepository(migrated_db).add_many(ROWS)
    return DashboardRepository(migrated_db)


async def test_hourly_timeline(repository: DashboardRepository) -> None:
    points = await repository.timeline(since=NOW - timedelta(hours=24), granularity="hour")
    assert [p.bucket for p in points] == ["2025-03-10 12:00", "2025-03-10 13:00"]
    first, second = points
    assert (first.total, first.local, first.cloud, first.fallbacks, first.breaker_events) == (4, 3, 1, 1, 1)
    assert first.local_share == 0.75
    assert first.cost_usd == pytest.approx(0.003)
    assert first.cloud_equivalent_usd == pytest.approx(0.010)
    assert first.cost_avoided_usd == pytest.approx(0.007)
    assert (second.total, second.local, second.cloud, second.errors, second.breaker_events) == (2, 1, 1, 1, 0)


async def test_daily_timeline_and_since_bound(repository: DashboardRepository) -> None:
    points = await repository.timeline(since=BASE - timedelta(days=2), granularity="day")
    assert [(p.bucket, p.total) for p in points] == [("2025-03-09", 1), ("2025-03-10", 6)]
    # Buckets are UTC whatever the zone of ``since``.
    tokyo = (BASE - timedelta(minutes=5)).astimezone(timezone(timedelta(hours=9)))
    assert [p.total for p in await repository.timeline(since=tokyo, granularity="day")] == [6]


async def test_latency_percentiles_nearest_rank(repository: DashboardRepository) -> None:
    rows = await repository.latency_percentiles(since=NOW - timedelta(hours=24))
    # local latencies sorted: 100 200 300 400 -> P50 = 2nd (ceil(0.5*4)), P95 = 4th; cloud: only the ok 900.
    assert rows == [
        LatencyPercentiles("cloud", 1, 900.0, 900.0),
        LatencyPercentiles("local", 4, 200.0, 400.0),
    ]


async def test_empty_window(repository: DashboardRepository) -> None:
    later = NOW + timedelta(days=30)
    assert await repository.timeline(since=later, granularity="hour") == []
    assert await repository.latency_percentiles(since=later) == []


async def test_naive_since_is_refused(repository: DashboardRepository) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await repository.timeline(since=datetime(2025, 1, 1), granularity="day")
