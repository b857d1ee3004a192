"""Aggregates over ``request_records`` for the admin dashboard, computed in the database.

Every query is plain SQL that SQLite (3.25+, for window functions) and PostgreSQL both run; the only dialect
difference, turning a timestamp into a UTC time bucket, is chosen from the connected dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, String, case, cast, func, or_, select

from upcoach.storage.database import Database
from upcoach.storage.tables import RequestRecordRow

Granularity = Literal["hour", "day"]

# What the routing engine writes when the cloud breaker kept a request away from the cloud (policy.py, engine.py).
BREAKER_REASON = "circuit breaker open"

_SQLITE_FORMATS = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}
_POSTGRES_FORMATS = {"hour": "YYYY-MM-DD HH24:00", "day": "YYYY-MM-DD"}


@dataclass(frozen=True)
class TimelinePoint:
    """One time bucket (UTC, ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:00``) of traffic, events and money."""

    bucket: str
    total: int
    local: int
    cloud: int
    hybrid: int
    unanswered: int
    fallbacks: int
    breaker_events: int
    errors: int
    cost_usd: float
    cloud_equivalent_usd: float

    @property
    def local_share(self) -> float:
        return self.local / self.total if self.total else 0.0

    @property
    def cost_avoided_usd(self) -> float:
        return max(0.0, self.cloud_equivalent_usd - self.cost_usd)


@dataclass(frozen=True)
class LatencyPercentiles:
    """Nearest-rank percentiles of end-to-end latency of successful requests, per processing mode."""

    mode: str
    count: int
    p50_ms: float
    p95_ms: float


def _bucket(dialect: str, granularity: Granularity) -> ColumnElement[str]:
    column = RequestRecordRow.created_at
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), _POSTGRES_FORMATS[granularity])
    if dialect == "sqlite":
        # SQLite rows hold naive UTC text (tables.UTCDateTime), which strftime reads as UTC.
        return func.strftime(_SQLITE_FORMATS[granularity], column)
    raise ValueError(f"no time buckets for the {dialect!r} dialect")


def _since(since: datetime) -> ColumnElement[bool]:
    if since.utcoffset() is None:
        raise ValueError(f"since must be timezone-aware, got {since!r}")
    return RequestRecordRow.created_at >= since


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


class DashboardRepository:
    """The service-wide figures the admin view charts. Read-only."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def timeline(self, *, since: datetime, granularity: Granularity) -> list[TimelinePoint]:
        """Oldest bucket first; buckets without requests are absent (the chart shows gaps as gaps)."""
        row = RequestRecordRow
        bucket = _bucket(self._db.dialect, granularity).label("bucket")
        # reasons is a JSON list; its text form is searchable the same way on both backends.
        breaker = cast(row.reasons, String).like(f"%{BREAKER_REASON}%")
        query = (
            select(
                bucket,
                func.count(),
                _count_if(row.processing_mode == "local"),
                _count_if(row.processing_mode == "cloud"),
                _count_if(row.processing_mode == "hybrid"),
                _count_if(row.processing_mode == "none"),
                _count_if(row.fallback_used.is_(True)),
                _count_if(breaker),
                _count_if(row.outcome == "error"),
                func.sum(row.cost_usd),
                func.sum(row.cloud_cost_equivalent_usd),
            )
            .where(_since(since))
            .group_by(bucket)
            .order_by(bucket)
        )
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            TimelinePoint(
                bucket=str(b),
                total=int(total),
                local=int(local),
                cloud=int(cloud),
                hybrid=int(hybrid),
                unanswered=int(none),
                fallbacks=int(fallbacks),
                breaker_events=int(breakers),
                errors=int(errors),
                cost_usd=float(cost),
                cloud_equivalent_usd=float(equivalent),
            )
            for b, total, local, cloud, hybrid, none, fallbacks, breakers, errors, cost, equivalent in rows
        ]

    async def latency_percentiles(self, *, since: datetime) -> list[LatencyPercentiles]:
        """P50 and P95 per processing mode (successful requests only: a fast error is not a fast answer)."""
        row = RequestRecordRow
        ranked = (
            select(
                row.processing_mode.label("mode"),
                row.latency_ms.label("latency"),
                func.row_number().over(partition_by=row.processing_mode, order_by=row.latency_ms).label("rank"),
                func.count().over(partition_by=row.processing_mode).label("n"),
            )
            .where(_since(since), row.outcome == "ok", row.processing_mode != "none")
            .subquery()
        )
        # Nearest rank ceil(p * n), in integer arithmetic so both backends agree.
        p50 = (50 * ranked.c.n + 99) // 100
        p95 = (95 * ranked.c.n + 99) // 100
        query = (
            select(ranked.c.mode, ranked.c.n, ranked.c.latency, ranked.c.rank == p50, ranked.c.rank == p95)
            .where(or_(ranked.c.rank == p50, ranked.c.rank == p95))
            .order_by(ranked.c.mode)
        )
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        found: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for mode, n, latency, is_p50, is_p95 in rows:
            counts[mode] = int(n)
            if is_p50:
                found.setdefault(mode, {})["p50"] = float(latency)
            if is_p95:
                found.setdefault(mode, {})["p95"] = float(latency)
        return [
            LatencyPercentiles(mode=mode, count=counts[mode], p50_ms=values["p50"], p95_ms=values["p95"])
            for mode, values in sorted(found.items())
        ]
