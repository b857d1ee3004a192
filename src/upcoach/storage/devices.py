"""Rows of the device features (#19): registered devices, delivered outbox items, on-device usage counts, and the
stored answers of POSTs sent with an Idempotency-Key."""

from __future__ import annotations

import builtins
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from upcoach.storage.database import Database
from upcoach.storage.tables import DeviceRow, DeviceUsageRow, IdempotencyRow, SyncItemRow


class DeviceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: DeviceRow) -> None:
        async with self._db.sessions.begin() as session:
            session.add(row)

    async def get(self, device_id: str) -> DeviceRow | None:
        async with self._db.sessions() as session:
            return await session.get(DeviceRow, device_id)

    async def by_key(self, key_id: str) -> DeviceRow | None:
        async with self._db.sessions() as session:
            return (await session.scalars(select(DeviceRow).where(DeviceRow.key_id == key_id))).first()

    async def list(self, user_id: str | None = None) -> builtins.list[DeviceRow]:
        """One user's devices (every user's when None), newest first, revoked ones included."""
        query = select(DeviceRow).order_by(DeviceRow.created_at.desc(), DeviceRow.id)
        if user_id is not None:
            query = query.where(DeviceRow.user_id == user_id)
        async with self._db.sessions() as session:
            return builtins.list((await session.scalars(query)).all())

    async def revoke(self, device_id: str, when: datetime) -> bool:
        """Whether this call revoked it (a revoked device keeps its first revocation time)."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(DeviceRow)
                .where(DeviceRow.id == device_id, DeviceRow.revoked_at.is_(None))
                .values(revoked_at=when)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def synced(self, device_id: str, when: datetime, model_version: str | None) -> None:
        values: dict[str, object] = {"last_sync_at": when}
        if model_version is not None:
            values["model_version"] = model_version
        async with self._db.sessions.begin() as session:
            await session.execute(update(DeviceRow).where(DeviceRow.id == device_id).values(**values))

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(DeviceRow).where(DeviceRow.user_id == user_id))
            return int(result.rowcount)  # type: ignore[attr-defined]


class SyncItemRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, row: SyncItemRow) -> SyncItemRow | None:
        """Insert a pending item: None if this call claimed it, else the row a delivery before it left."""
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
            return None
        except IntegrityError:
            async with self._db.sessions() as session:
                return await session.get(SyncItemRow, (row.user_id, row.client_id))

    async def finish(
        self, user_id: str, client_id: str, status: str, result_id: str | None, reason: str | None
    ) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(SyncItemRow)
                .where(SyncItemRow.user_id == user_id, SyncItemRow.client_id == client_id)
                .values(status=status, result_id=result_id, reason=reason)
            )

    async def release(self, user_id: str, client_id: str) -> None:
        """Forget a claim whose item could not be applied for a passing reason: the next delivery applies it."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(SyncItemRow).where(SyncItemRow.user_id == user_id, SyncItemRow.client_id == client_id)
            )

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(SyncItemRow).where(SyncItemRow.user_id == user_id))
            return int(result.rowcount)  # type: ignore[attr-defined]


class DeviceUsageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, row: DeviceUsageRow) -> None:
        async with self._db.sessions.begin() as session:
            session.add(row)

    async def totals(self, since_day: str | None = None) -> tuple[float, float]:
        """(local generations, library answers) summed over every device: noisy counts, so only sums mean much."""
        query = select(func.sum(DeviceUsageRow.local_generations), func.sum(DeviceUsageRow.library_answers))
        if since_day is not None:
            query = query.where(DeviceUsageRow.day >= since_day)
        async with self._db.sessions() as session:
            local, library = (await session.execute(query)).one()
        return float(local or 0.0), float(library or 0.0)

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(DeviceUsageRow).where(DeviceUsageRow.user_id == user_id))
            return int(result.rowcount)  # type: ignore[attr-defined]


class IdempotencyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(
        self, row: IdempotencyRow, expired_before: datetime, stale_before: datetime
    ) -> IdempotencyRow | None:
        """None if this call claimed the key, else the live row that holds it. An expired answer, or a claim still
        running since before ``stale_before`` (its process died), is replaced."""
        old = or_(
            IdempotencyRow.created_at < expired_before,
            and_(IdempotencyRow.status.is_(None), IdempotencyRow.created_at < stale_before),
        )
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(IdempotencyRow).where(IdempotencyRow.scope == row.scope, IdempotencyRow.key == row.key, old)
            )
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
            return None
        except IntegrityError:
            async with self._db.sessions() as session:
                return await session.get(IdempotencyRow, (row.scope, row.key))

    async def complete(self, scope: str, key: str, status: int, media_type: str | None, sealed: bytes) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(IdempotencyRow)
                .where(IdempotencyRow.scope == scope, IdempotencyRow.key == key)
                .values(status=status, media_type=media_type, sealed=sealed)
            )

    async def release(self, scope: str, key: str) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                delete(IdempotencyRow).where(IdempotencyRow.scope == scope, IdempotencyRow.key == key)
            )
