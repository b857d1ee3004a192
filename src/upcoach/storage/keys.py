"""API key rows: who a key belongs to, its role, a digest of its secret, and its life cycle."""

from __future__ import annotations

import builtins
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from sqlalchemy import select, update

from upcoach.storage.database import Database
from upcoach.storage.tables import ApiKeyRow


@dataclass(frozen=True, kw_only=True)
class ApiKeyRecord:
    """Same fields as the ``api_keys`` table. ``secret_hash`` is a digest; the secret itself is never stored."""

    id: str
    user_id: str
    role: str
    secret_hash: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


_FIELDS = tuple(f.name for f in fields(ApiKeyRecord))


def _to_record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(**{name: getattr(row, name) for name in _FIELDS})


class ApiKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, record: ApiKeyRecord) -> None:
        async with self._db.sessions.begin() as session:
            session.add(ApiKeyRow(**asdict(record)))

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        async with self._db.sessions() as session:
            row = await session.get(ApiKeyRow, key_id)
            return None if row is None else _to_record(row)

    # Inside this class "list" names the method below, hence builtins.list in its signature.
    async def list(self) -> builtins.list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        async with self._db.sessions() as session:
            return [_to_record(row) for row in (await session.scalars(query)).all()]

    async def revoke(self, key_id: str, when: datetime) -> bool:
        """Mark a key revoked. False if it does not exist or was already revoked (the first time is kept)."""
        statement = (
            update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None)).values(revoked_at=when)
        )
        async with self._db.engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def touch(self, key_id: str, when: datetime) -> None:
        async with self._db.engine.begin() as conn:
            await conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=when))
