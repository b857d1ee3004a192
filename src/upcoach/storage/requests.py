"""Per-request routing records: the routing engine writes one per request; the dashboard and privacy tools read."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import ColumnElement, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences, refused
from upcoach.storage.tables import RequestRecordRow, utc_now

Endpoint = Literal["hybrid", "openai"]
Decision = Literal["local", "cloud"]
ProcessingMode = Literal["local", "cloud", "hybrid", "none"]
Outcome = Literal["ok", "error", "cancelled"]

PROCESSING_MODES: tuple[ProcessingMode, ...] = ("local", "cloud", "hybrid", "none")


@dataclass(kw_only=True)
class RequestRecord:
    """What happened to one request. Same fields as the ``request_records`` table, and never message text.

    ``decision`` is what the policy chose; ``processing_mode`` is where the answer really came from (they differ
    after a fallback, and "none" means nothing answered). ``cloud_cost_equivalent_usd`` is what the same tokens
    would have cost in the cloud, so the dashboard can show the cost avoided by running locally.
    """

    id: str
    endpoint: Endpoint
    privacy_level: str
    decision: Decision
    processing_mode: ProcessingMode
    backend: str
    outcome: Outcome
    latency_ms: float
    user_id: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    reasons: list[str] = field(default_factory=list)
    fallback_used: bool = False
    error_code: str | None = None
    first_token_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cloud_cost_equivalent_usd: float = 0.0
    region: str | None = None
    redactions: dict[str, int] | None = None
    routing: dict[str, object] | None = None  # routing/learned.py record_fields: numbers and flags only
    finish_reason: str | None = None


@dataclass
class UsageSummary:
    total: int
    by_mode: dict[str, int]
    local_share: float
    fallbacks: int
    errors: int
    cost_incurred_usd: float
    cloud_equivalent_usd: float
    cost_avoided_usd: float
    prompt_tokens: int
    completion_tokens: int


_FIELDS = tuple(f.name for f in fields(RequestRecord))


def _to_record(row: RequestRecordRow) -> RequestRecord:
    return RequestRecord(**{name: getattr(row, name) for name in _FIELDS})


def _require_aware(value: datetime, name: str) -> None:
    # Naive datetimes are ambiguous; compared against UTC rows they would silently shift filters and retention.
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _filters(user_id: str | None, since: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if user_id is not None:
        conditions.append(RequestRecordRow.user_id == user_id)
    if since is not None:
        _require_aware(since, "since")
        conditions.append(RequestRecordRow.created_at >= since)
    return conditions


class RequestRepository:
    """Stores and queries ``RequestRecord``s. Timestamps in and out are timezone-aware (returned in UTC)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, record: RequestRecord) -> None:
        _require_aware(record.created_at, "created_at")
        async with self._db.sessions.begin() as session:
            # asdict deep-copies, so the caller's reasons and redactions are not shared with the session.
            session.add(RequestRecordRow(**asdict(record)))

    async def add_many(self, records: Sequence[RequestRecord]) -> None:
        """Insert a batch in one transaction (the background record writer's path)."""
        for record in records:
            _require_aware(record.created_at, "created_at")
        async with self._db.sessions.begin() as session:
            session.add_all([RequestRecordRow(**asdict(record)) for record in records])

    async def add_fenced(self, items: Sequence[tuple[RequestRecord, datetime]]) -> builtins.list[str]:
        """Insert ``(record, started_at)`` pairs in one transaction, except those of users erased at or after the
        request started (storage/fences.py); returns the ids refused so. A record whose id is already stored is
        skipped, not an error: replaying a spool twice writes each record once."""
        for record, started_at in items:
            _require_aware(record.created_at, "created_at")
            _require_aware(started_at, "started_at")
        async with Fences(self._db).guarded(record.user_id for record, _ in items) as (conn, erased):
            refused_ids = {record.id for record, started in items if refused(erased, record.user_id, started)}
            rows = [asdict(record) for record, started in items if record.id not in refused_ids]
            if rows:
                dialect = postgresql if self._db.dialect == "postgresql" else sqlite
                await conn.execute(dialect.insert(RequestRecordRow).on_conflict_do_nothing(), rows)
        return sorted(refused_ids)

    async def ping(self) -> None:
        await self._db.ping()

    async def get(self, request_id: str) -> RequestRecord | None:
        async with self._db.sessions() as session:
            row = await session.get(RequestRecordRow, request_id)
            return None if row is None else _to_record(row)

    async def served_to(self, request_id: str, user_id: str) -> RequestRecord | None:
        """The record of ``request_id`` if it was answered (outcome ok) for ``user_id``, else None: what a rating
        may refer to. Records are written in the background, so a request may not be found a moment after it."""
        record = await self.get(request_id)
        if record is None or record.user_id != user_id or record.outcome != "ok":
            return None
        return record

    # Inside this class "list" names the method below, hence builtins.list in its signature.
    async def list(
        self, *, user_id: str | None = None, since: datetime | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[RequestRecord]:
        """Newest first; ``since`` is inclusive; ``offset`` skips that many (the dashboard's pages)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if offset < 0:
            raise ValueError(f"offset must not be negative, got {offset}")
        query = (
            select(RequestRecordRow)
            .where(*_filters(user_id, since))
            # id breaks ties so that equal timestamps still page in a stable order.
            .order_by(RequestRecordRow.created_at.desc(), RequestRecordRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
            return [_to_record(row) for row in rows]

    async def summary(self, *, user_id: str | None = None, since: datetime | None = None) -> UsageSummary:
        """Totals for the dashboard, computed in the database: one aggregate row per processing mode."""
        row = RequestRecordRow
        query = (
            select(
                row.processing_mode,
                func.count(),
                func.sum(case((row.fallback_used.is_(True), 1), else_=0)),
                func.sum(case((row.outcome == "error", 1), else_=0)),
                func.sum(row.cost_usd),
                func.sum(row.cloud_cost_equivalent_usd),
                func.sum(row.prompt_tokens),
                func.sum(row.completion_tokens),
            )
            .where(*_filters(user_id, since))
            .group_by(row.processing_mode)
        )
        async with self._db.sessions() as session:
            groups = (await session.execute(query)).all()

        # No matching rows means no groups at all, so the sums below are never NULL.
        by_mode: dict[str, int] = dict.fromkeys(PROCESSING_MODES, 0)
        fallbacks = errors = prompt_tokens = completion_tokens = 0
        incurred = cloud_equivalent = 0.0
        for mode, count, fallback_count, error_count, cost, cloud, prompt, completion in groups:
            by_mode[mode] = by_mode.get(mode, 0) + int(count)
            fallbacks += int(fallback_count)
            errors += int(error_count)
            incurred += float(cost)
            cloud_equivalent += float(cloud)
            prompt_tokens += int(prompt)
            completion_tokens += int(completion)
        total = sum(by_mode.values())
        return UsageSummary(
            total=total,
            by_mode=by_mode,
            local_share=by_mode["local"] / total if total else 0.0,
            fallbacks=fallbacks,
            errors=errors,
            cost_incurred_usd=incurred,
            cloud_equivalent_usd=cloud_equivalent,
            # A pricier route than the reference cloud model must not show up as negative savings.
            cost_avoided_usd=max(0.0, cloud_equivalent - incurred),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    async def all_for_user(self, user_id: str) -> builtins.list[RequestRecord]:
        """Every record of one user, oldest first (data-subject export)."""
        query = (
            select(RequestRecordRow)
            .where(RequestRecordRow.user_id == user_id)
            .order_by(RequestRecordRow.created_at, RequestRecordRow.id)
        )
        async with self._db.sessions() as session:
            return [_to_record(row) for row in (await session.scalars(query)).all()]

    async def delete_for_user(self, user_id: str) -> int:
        """Erase every record of one user (data-subject erasure). Returns the number of rows deleted."""
        return await self._delete(RequestRecordRow.user_id == user_id)

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: delete records created strictly before ``cutoff``. Returns the number of rows deleted."""
        _require_aware(cutoff, "cutoff")
        return await self._delete(RequestRecordRow.created_at < cutoff)

    async def _delete(self, condition: ColumnElement[bool]) -> int:
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(RequestRecordRow).where(condition))
            return cast(int, result.rowcount)
