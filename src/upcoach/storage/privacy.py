"""Privacy storage: per-user settings (current row + versioned history), audit rows about a user, retention deletes.

Settings writes are optimistic: a new version is inserted into the history under the primary key (user_id,
version), so two writers that both read version n cannot both write n + 1, whatever process they run in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, delete, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from upcoach.storage.audit import AuditEvent
from upcoach.storage.database import Database
from upcoach.storage.tables import (
    AuditEventRow,
    PrivacySettingsHistoryRow,
    PrivacySettingsRow,
    RequestRecordRow,
)

RETENTION_BATCH = 5000


class StaleVersion(Exception):
    """Another writer stored this version first."""


@dataclass(frozen=True, kw_only=True)
class SettingsVersion:
    """One stored version of a user's privacy settings (same fields as ``privacy_settings_history``)."""

    user_id: str
    version: int
    processing_mode: str
    special_category_cloud_opt_in: bool
    region: str | None
    retention_days: int
    analytics_opt_in: bool
    do_not_share: bool
    updated_at: datetime
    actor: str = ""
    actor_role: str = ""


_CURRENT_FIELDS = tuple(f.name for f in fields(SettingsVersion) if f.name not in ("actor", "actor_role"))
_HISTORY_FIELDS = tuple(f.name for f in fields(SettingsVersion))
_AUDIT_FIELDS = tuple(f.name for f in fields(AuditEvent))


class PrivacyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def current(self, user_id: str) -> SettingsVersion | None:
        async with self._db.sessions() as session:
            row = await session.get(PrivacySettingsRow, user_id)
            if row is None:
                return None
            return SettingsVersion(**{name: getattr(row, name) for name in _CURRENT_FIELDS})

    async def save(self, new: SettingsVersion) -> None:
        """Store ``new`` as the version following ``new.version - 1``; StaleVersion if that is no longer current."""
        values = {name: getattr(new, name) for name in _CURRENT_FIELDS}
        try:
            async with self._db.sessions.begin() as session:
                session.add(PrivacySettingsHistoryRow(**asdict(new)))
                await session.flush()
                if new.version == 1:
                    session.add(PrivacySettingsRow(**values))
                else:
                    result = await session.execute(
                        update(PrivacySettingsRow)
                        .where(PrivacySettingsRow.user_id == new.user_id)
                        .where(PrivacySettingsRow.version == new.version - 1)
                        .values(**values)
                    )
                    if cast(int, result.rowcount) != 1:  # type: ignore[attr-defined]
                        raise StaleVersion(new.user_id)
        except IntegrityError as exc:
            raise StaleVersion(new.user_id) from exc

    async def history(self, user_id: str) -> list[SettingsVersion]:
        """Oldest first."""
        query = (
            select(PrivacySettingsHistoryRow)
            .where(PrivacySettingsHistoryRow.user_id == user_id)
            .order_by(PrivacySettingsHistoryRow.version)
        )
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
            return [SettingsVersion(**{name: getattr(row, name) for name in _HISTORY_FIELDS}) for row in rows]

    async def delete_user(self, user_id: str) -> int:
        """Erase a user's settings and their whole history; returns the number of history rows deleted."""
        async with self._db.engine.begin() as conn:
            await conn.execute(delete(PrivacySettingsRow).where(PrivacySettingsRow.user_id == user_id))
            result = await conn.execute(
                delete(PrivacySettingsHistoryRow).where(PrivacySettingsHistoryRow.user_id == user_id)
            )
            return cast(int, result.rowcount)

    async def audit_about(self, user_id: str) -> list[AuditEvent]:
        """Audit events by or about a user: they acted, they were the target, or the details name them
        (``details.user_id``, as key creation writes). Oldest first."""
        row = AuditEventRow
        query = (
            select(row)
            .where(or_(row.actor == user_id, row.target == user_id, row.details["user_id"].as_string() == user_id))
            .order_by(row.id)
        )
        async with self._db.sessions() as session:
            rows = (await session.scalars(query)).all()
            return [AuditEvent(**{name: getattr(r, name) for name in _AUDIT_FIELDS}) for r in rows]

    async def delete_expired_records(self, default_days: int, now: datetime, batch: int = RETENTION_BATCH) -> int:
        """Delete request records older than their user's retention period (``default_days`` for users without
        settings and for anonymous records). Returns the number of rows deleted.

        One retention class at a time, each in batches of ``batch`` rows per transaction, so that a first run over
        a large table never holds one huge transaction (and its locks) on PostgreSQL.
        """
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        records = aliased(RequestRecordRow)
        async with self._db.sessions() as session:
            periods = (await session.scalars(select(PrivacySettingsRow.retention_days).distinct())).all()
        total = 0
        for days in periods:
            users = select(PrivacySettingsRow.user_id).where(PrivacySettingsRow.retention_days == days)
            total += await self._delete_batched(
                (records.user_id.in_(users)) & (records.created_at < now - timedelta(days=days)), records, batch
            )
        without_settings = ~exists().where(PrivacySettingsRow.user_id == records.user_id)
        total += await self._delete_batched(
            without_settings & (records.created_at < now - timedelta(days=default_days)), records, batch
        )
        return total

    async def _delete_batched(self, condition: ColumnElement[bool], records: object, batch: int) -> int:
        ids = select(records.id).where(condition).limit(batch)  # type: ignore[attr-defined]
        total = 0
        while True:
            async with self._db.engine.begin() as conn:
                result = await conn.execute(delete(RequestRecordRow).where(RequestRecordRow.id.in_(ids)))
            deleted = cast(int, result.rowcount)
            total += deleted
            if deleted < batch:
                return total
