"""Experiments, exposures and outcome events. Only users who opted in to analytics ever get rows here."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from upcoach.errors import ExperimentExists
from upcoach.storage.database import Database
from upcoach.storage.fences import Fences, refused
from upcoach.storage.tables import ExperimentEventRow, ExperimentExposureRow, ExperimentRow, utc_now


@dataclass(frozen=True)
class UserOutcome:
    """One exposed user's outcome on one metric: the mean and the maximum of their event values."""

    variant: str
    user_id: str
    mean: float
    maximum: float


class ExperimentRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, row: ExperimentRow) -> ExperimentRow:
        try:
            async with self._db.sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise ExperimentExists(f"experiment {row.key!r} already exists", param="key") from exc
        return row

    async def get(self, key: str) -> ExperimentRow | None:
        async with self._db.sessions() as session:
            return await session.get(ExperimentRow, key)

    async def list(self) -> builtins.list[ExperimentRow]:
        async with self._db.sessions() as session:
            rows = await session.scalars(select(ExperimentRow).order_by(ExperimentRow.created_at.desc()))
            return builtins.list(rows.all())

    async def stop(self, key: str, at: datetime) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(ExperimentRow)
                .where(ExperimentRow.key == key, ExperimentRow.status == "running")
                .values(status="stopped", stopped_at=at)
            )

    async def expose(self, key: str, user_id: str, variant: str, *, started_at: datetime) -> bool:
        """Record the user's first exposure (later ones change nothing). False, and nothing written, for a user
        erased at or after ``started_at`` (storage/fences.py)."""
        values = {"experiment_key": key, "user_id": user_id, "variant": variant, "exposed_at": utc_now()}
        dialect = postgresql if self._db.dialect == "postgresql" else sqlite
        statement = dialect.insert(ExperimentExposureRow).values(**values).on_conflict_do_nothing()
        async with Fences(self._db).guarded([user_id]) as (conn, erased):
            if refused(erased, user_id, started_at):
                return False
            await conn.execute(statement)
        return True

    async def add_event(
        self, key: str, user_id: str, variant: str, metric: str, value: float, *, started_at: datetime
    ) -> bool:
        """Store one outcome event; False (nothing written) for a user erased at or after ``started_at``."""
        values = {"id": uuid.uuid4().hex, "experiment_key": key, "user_id": user_id, "variant": variant,
                  "metric": metric, "value": value, "created_at": utc_now()}  # fmt: skip
        async with Fences(self._db).guarded([user_id]) as (conn, erased):
            if refused(erased, user_id, started_at):
                return False
            await conn.execute(insert(ExperimentEventRow).values(**values))
        return True

    async def exposures(self, key: str) -> dict[str, int]:
        query = (
            select(ExperimentExposureRow.variant, func.count())
            .where(ExperimentExposureRow.experiment_key == key)
            .group_by(ExperimentExposureRow.variant)
        )
        async with self._db.sessions() as session:
            return {variant: int(count) for variant, count in (await session.execute(query)).all()}

    async def outcomes(self, key: str, metric: str) -> builtins.list[UserOutcome]:
        """Per exposed user with at least one event of ``metric``; the variant is the one they were exposed to."""
        event, exposure = ExperimentEventRow, ExperimentExposureRow
        query = (
            select(exposure.variant, event.user_id, func.avg(event.value), func.max(event.value))
            .join(exposure, (exposure.experiment_key == event.experiment_key) & (exposure.user_id == event.user_id))
            .where(event.experiment_key == key, event.metric == metric)
            .group_by(exposure.variant, event.user_id)
        )
        async with self._db.sessions() as session:
            rows = (await session.execute(query)).all()
        return [UserOutcome(variant, user, float(mean), float(maximum)) for variant, user, mean, maximum in rows]

    async def export_for_user(self, user_id: str) -> dict[str, builtins.list[dict[str, object]]]:
        async with self._db.sessions() as session:
            exposures = (
                await session.scalars(select(ExperimentExposureRow).where(ExperimentExposureRow.user_id == user_id))
            ).all()
            events = (
                await session.scalars(
                    select(ExperimentEventRow)
                    .where(ExperimentEventRow.user_id == user_id)
                    .order_by(ExperimentEventRow.created_at)
                )
            ).all()
        return {
            "exposures": [
                {"experiment": row.experiment_key, "variant": row.variant, "exposedAt": row.exposed_at.isoformat()}
                for row in exposures
            ],
            "events": [
                {"experiment": row.experiment_key, "variant": row.variant, "metric": row.metric, "value": row.value,
                 "createdAt": row.created_at.isoformat()}
                for row in events
            ],
        }  # fmt: skip

    async def delete_for_user(self, user_id: str) -> int:
        async with self._db.engine.begin() as conn:
            events = await conn.execute(delete(ExperimentEventRow).where(ExperimentEventRow.user_id == user_id))
            exposures = await conn.execute(
                delete(ExperimentExposureRow).where(ExperimentExposureRow.user_id == user_id)
            )
            return int(events.rowcount or 0) + int(exposures.rowcount or 0)
