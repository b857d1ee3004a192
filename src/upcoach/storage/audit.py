"""Audit event rows: append at the tail of the chain (serialised in the database), query, and scan in id order.

The HMAC chain itself is computed in observability/audit.py; this module only guarantees that every append sees
the true tail and that no two rows can follow the same predecessor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime

from sqlalchemy import ColumnElement, insert, select, text

from upcoach.storage.database import Database
from upcoach.storage.tables import AuditEventRow

# Any fixed 64-bit number other than the migration lock: every process appending to this database uses it.
_APPEND_LOCK_KEY = 0x7570636F61756474

GENESIS_HMAC = "0" * 64


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """Same fields as the ``audit_events`` table."""

    id: int
    created_at: datetime
    actor: str
    actor_role: str
    action: str
    target: str | None
    details: dict[str, object] = field(default_factory=dict)
    prev_hmac: str
    hmac: str

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, kw_only=True)
class AuditFilter:
    """All given conditions must hold. Times are inclusive and timezone-aware; ids are exclusive bounds."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None
    before_id: int | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        row = AuditEventRow
        conditions: list[ColumnElement[bool]] = []
        for name in ("since", "until"):
            value = getattr(self, name)
            # Naive datetimes would be compared against UTC rows and silently shift the window.
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, got {value!r}")
        if self.actor is not None:
            conditions.append(row.actor == self.actor)
        if self.action is not None:
            conditions.append(row.action == self.action)
        if self.since is not None:
            conditions.append(row.created_at >= self.since)
        if self.until is not None:
            conditions.append(row.created_at <= self.until)
        if self.after_id is not None:
            conditions.append(row.id > self.after_id)
        if self.before_id is not None:
            conditions.append(row.id < self.before_id)
        return conditions


_FIELDS = tuple(f.name for f in fields(AuditEvent))


def _to_event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(**{name: getattr(row, name) for name in _FIELDS})


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, make: Callable[[int, str], AuditEvent]) -> AuditEvent:
        """Insert ``make(next_id, prev_hmac)`` at the tail, in one transaction that holds the database's write lock.

        The lock (a PostgreSQL advisory lock, SQLite's BEGIN IMMEDIATE) is taken before the tail is read, so
        writers in other processes queue up behind it instead of reading the same tail. The primary key and the
        unique ``prev_hmac`` would still refuse a fork if some writer skipped the lock.
        """
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY})
            elif self._db.dialect == "sqlite":
                # The sqlite3 driver would only begin a transaction at the INSERT, after the tail was read.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            tail = (
                await conn.execute(
                    select(AuditEventRow.id, AuditEventRow.hmac).order_by(AuditEventRow.id.desc()).limit(1)
                )
            ).first()
            last_id, prev_hmac = (0, GENESIS_HMAC) if tail is None else (int(tail[0]), str(tail[1]))
            event = make(last_id + 1, prev_hmac)
            if event.id != last_id + 1 or event.prev_hmac != prev_hmac:
                raise ValueError(f"event {event.id} does not extend the tail {last_id}")
            await conn.execute(insert(AuditEventRow).values(**asdict(event)))
            return event

    async def query(self, filters: AuditFilter, limit: int) -> list[AuditEvent]:
        """Matching events in id order (oldest first), at most ``limit``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = select(AuditEventRow).where(*filters.conditions()).order_by(AuditEventRow.id).limit(limit)
        async with self._db.sessions() as session:
            return [_to_event(row) for row in (await session.scalars(query)).all()]

    async def latest_about(self, target: str, actions: Sequence[str], limit: int) -> list[AuditEvent]:
        """The newest events with this target and one of these actions, newest first."""
        row = AuditEventRow
        query = select(row).where(row.target == target, row.action.in_(actions)).order_by(row.id.desc()).limit(limit)
        async with self._db.sessions() as session:
            return [_to_event(r) for r in (await session.scalars(query)).all()]

    async def scan(self, filters: AuditFilter | None = None, batch: int = 1000) -> AsyncIterator[AuditEvent]:
        """Every matching event in id order, read in batches (keyset paging on id, so memory stays bounded)."""
        filters = filters or AuditFilter()
        after_id = filters.after_id
        while True:
            page = await self.query(replace(filters, after_id=after_id), batch)
            for event in page:
                yield event
            if len(page) < batch:
                return
            after_id = page[-1].id
