"""Rows of the device features (#19): registered devices, delivered outbox items, on-device usage counts, and the
stored answers of POSTs sent with an Idempotency-Key."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences, refused
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


class _Claims:
    """Rows whose insert is a claim: the primary key lets one caller in, the others get the row that holds it.
    The claimer finishes the row (writes its result) or releases it (deletes it, so the next caller claims)."""

    def __init__(self, db: Database, table: type[SyncItemRow] | type[IdempotencyRow], key: tuple[str, str]) -> None:
        self._db, self._table, self._key = db, table, key

    def where(self, key: tuple[str, str]) -> list[ColumnElement[bool]]:
        return [getattr(self._table, column) == value for column, value in zip(self._key, key, strict=True)]

    async def claim(self, row: Any) -> Any:
        """None if this call claimed the key, else the row that holds it."""
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
            return None
        except IntegrityError:
            async with self._db.sessions() as session:
                return await session.get(self._table, tuple(getattr(row, column) for column in self._key))

    async def finish(self, key: tuple[str, str], **values: object) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(update(self._table).where(*self.where(key)).values(**values))

    async def release(self, key: tuple[str, str], *also: ColumnElement[bool]) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(delete(self._table).where(*self.where(key), *also))


class SyncItemRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._claims = _Claims(db, SyncItemRow, ("user_id", "client_id"))

    async def claim(self, row: SyncItemRow) -> SyncItemRow | None:
        """Insert a pending item: None if this call claimed it, else the row a delivery before it left."""
        return await self._claims.claim(row)  # type: ignore[no-any-return]

    async def finish(
        self, user_id: str, client_id: str, status: str, result_id: str | None, reason: str | None
    ) -> None:
        await self._claims.finish((user_id, client_id), status=status, result_id=result_id, reason=reason)

    async def release(self, user_id: str, client_id: str) -> None:
        """Forget a claim whose item could not be applied for a passing reason: the next delivery applies it."""
        await self._claims.release((user_id, client_id))

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
        self._claims = _Claims(db, IdempotencyRow, ("scope", "key"))

    async def claim(
        self, row: IdempotencyRow, expired_before: datetime, stale_before: datetime
    ) -> IdempotencyRow | None:
        """None if this call claimed the key, else the live row that holds it. An expired answer, or a claim still
        running since before ``stale_before`` (its process died), is replaced."""
        old = or_(
            IdempotencyRow.created_at < expired_before,
            and_(IdempotencyRow.status.is_(None), IdempotencyRow.created_at < stale_before),
        )
        await self._claims.release((row.scope, row.key), old)
        return await self._claims.claim(row)  # type: ignore[no-any-return]

    async def complete(
        self,
        scope: str,
        key: str,
        answer: tuple[int, str | None, bytes],
        *,
        user_id: str | None,
        started_at: datetime,
    ) -> bool:
        """Store the answer (status, media type, sealed body) of ``user_id``'s request, unless their data was erased
        since it started: then the claim is dropped instead (False), and the erased data lives on nowhere."""
        status, media_type, sealed = answer
        where = self._claims.where((scope, key))
        async with Fences(self._db).guarded([user_id]) as (conn, erased):
            if refused(erased, user_id, started_at):
                await conn.execute(delete(IdempotencyRow).where(*where))
                return False
            values = {"status": status, "media_type": media_type, "sealed": sealed, "user_id": user_id}
            await conn.execute(update(IdempotencyRow).where(*where).values(**values))
        return True

    async def release(self, scope: str, key: str) -> None:
        await self._claims.release((scope, key))

    async def delete_for_user(self, user_id: str) -> int:
        """Erasure: the stored answers of the user's requests (they hold what the requests created)."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(IdempotencyRow).where(IdempotencyRow.user_id == user_id))
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def stored_for(self, user_id: str) -> builtins.list[dict[str, object]]:
        """Export: which stored answers name the user (the answers themselves are sealed to the caller's key)."""
        query = select(IdempotencyRow.key, IdempotencyRow.status, IdempotencyRow.created_at).where(
            IdempotencyRow.user_id == user_id
        )
        async with self._db.sessions() as session:
            rows = (await session.execute(query.order_by(IdempotencyRow.created_at))).all()
        return [{"key": key, "status": status, "createdAt": created.isoformat()} for key, status, created in rows]
