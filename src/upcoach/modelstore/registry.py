"""The model registry (which versions are installed, which one is active) and the download job table.

A version's id is ``f"{name}@{version}"``. Exactly one version may be active; the one it replaced is kept as
``previous``, the rollback target. Files live elsewhere (store.py): this module only holds their metadata.
"""

from __future__ import annotations

import builtins
import re
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from upcoach.errors import InvalidRequest, JobNotFound, ModelExists, ModelInUse, ModelNotFound, ModelNotReady
from upcoach.storage.database import Database
from upcoach.storage.tables import ModelJobRow, ModelVersionRow, utc_now

Status = Literal["downloading", "verifying", "ready", "failed"]
STATUSES = ("downloading", "verifying", "ready", "failed")
DEVICE_TIERS = ("flagship", "mid-range", "low-end", "server")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def model_id(name: str, version: str) -> str:
    """The id of ``name`` at ``version``; both are checked because the id also names the file on disk."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"model name {name!r}: letters, digits, '.', '_' and '-' only", param="name")
    if not _VERSION.fullmatch(version):
        raise InvalidRequest(f"model version {version!r}: letters, digits, '.', '_', '+' and '-'", param="version")
    return f"{name}@{version}"


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """Same fields as the ``model_versions`` table. ``path`` is the encrypted file; ``size`` the plaintext size
    (None until known); ``previous`` marks the version that was active before the current one."""

    id: str
    name: str
    version: str
    source: str
    sha256: str
    size: int | None
    quantization: str | None
    licence: str | None
    status: str
    active: bool
    previous: bool
    device_tier: str | None
    path: str
    error: str | None
    created_at: datetime
    activated_at: datetime | None = None


_FIELDS = tuple(f.name for f in fields(ModelVersion))


def _version(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(**{name: getattr(row, name) for name in _FIELDS})


class ModelRegistry:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self) -> builtins.list[ModelVersion]:
        """Every version, grouped by name, oldest first."""
        query = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.created_at)
        async with self._db.sessions() as session:
            return [_version(row) for row in (await session.scalars(query)).all()]

    async def get(self, id: str) -> ModelVersion:
        async with self._db.sessions() as session:
            row = await session.get(ModelVersionRow, id)
        if row is None:
            raise ModelNotFound(f"model {id!r} is not in the registry; see `upcoach models list`", param="id")
        return _version(row)

    async def find(self, id: str) -> ModelVersion | None:
        async with self._db.sessions() as session:
            row = await session.get(ModelVersionRow, id)
        return None if row is None else _version(row)

    async def active(self) -> ModelVersion | None:
        async with self._db.sessions() as session:
            row = (await session.scalars(select(ModelVersionRow).where(ModelVersionRow.active))).first()
        return None if row is None else _version(row)

    async def previous_active(self) -> ModelVersion | None:
        """The version that was active before the current one (the rollback target), if it is still installed."""
        async with self._db.sessions() as session:
            row = (await session.scalars(select(ModelVersionRow).where(ModelVersionRow.previous))).first()
        return None if row is None else _version(row)

    async def resolve(self, id_or_name: str) -> ModelVersion:
        """An id (``name@version``) as is; a bare name means its active version, else its newest ready one."""
        if "@" in id_or_name:
            return await self.get(id_or_name)
        query = (
            select(ModelVersionRow)
            .where(ModelVersionRow.name == id_or_name, ModelVersionRow.status == "ready")
            .order_by(ModelVersionRow.active.desc(), ModelVersionRow.created_at.desc())
        )
        async with self._db.sessions() as session:
            row = (await session.scalars(query)).first()
        if row is None:
            raise ModelNotFound(f"no ready version of model {id_or_name!r} in the registry", param="id")
        return _version(row)

    async def add(
        self,
        *,
        name: str,
        version: str,
        source: str,
        sha256: str,
        path: str,
        size: int | None = None,
        quantization: str | None = None,
        licence: str | None = None,
        device_tier: str | None = None,
        status: Status = "downloading",
    ) -> ModelVersion:
        """Register a version. A failed or unfinished row of the same id is replaced (a retry); a ready one is
        kept and ``ModelExists`` raised: delete it first to install it again."""
        id = model_id(name, version)
        values = dict(
            id=id, name=name, version=version, source=source, sha256=sha256.lower(), size=size,
            quantization=quantization, licence=licence, status=status, active=False, previous=False,
            device_tier=device_tier, path=path, error=None, created_at=utc_now(), activated_at=None,
        )  # fmt: skip
        async with self._db.sessions.begin() as session:
            row = await session.get(ModelVersionRow, id, with_for_update=True)
            if row is None:
                session.add(ModelVersionRow(**values))
            elif row.status == "ready":
                raise ModelExists(f"model {id} is already installed", param="id")
            else:
                for key, value in values.items():
                    if key not in ("active", "previous"):
                        setattr(row, key, value)
        return await self.get(id)

    async def set_status(
        self, id: str, status: Status, error: str | None = None, *, size: int | None = None, sha256: str | None = None
    ) -> ModelVersion:
        """Move a version through downloading -> verifying -> ready | failed; ``size`` and ``sha256`` record what
        the download measured (a local import learns its digest only then)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        values: dict[str, object] = {"status": status, "error": error[:2048] if error else None}
        if size is not None:
            values["size"] = size
        if sha256 is not None:
            values["sha256"] = sha256.lower()
        async with self._db.engine.begin() as conn:
            result = await conn.execute(update(ModelVersionRow).where(ModelVersionRow.id == id).values(**values))
        if not result.rowcount:
            raise ModelNotFound(f"model {id!r} is not in the registry", param="id")
        return await self.get(id)

    async def activate(self, id: str) -> ModelVersion:
        """Make ``id`` the one active version; the version active until now becomes ``previous``."""
        try:
            async with self._db.sessions.begin() as session:
                target = await session.get(ModelVersionRow, id, with_for_update=True)
                if target is None:
                    raise ModelNotFound(f"model {id!r} is not in the registry", param="id")
                if target.status != "ready":
                    raise ModelNotReady(f"model {id} is {target.status}, only a ready version can be activated")
                if target.active:
                    return _version(target)
                current = (
                    await session.scalars(select(ModelVersionRow).where(ModelVersionRow.active).with_for_update())
                ).first()
                await session.execute(update(ModelVersionRow).where(ModelVersionRow.previous).values(previous=False))
                if current is not None:
                    current.active = False
                    current.previous = True
                    # The partial unique index is checked per statement: the old row must be off first.
                    await session.flush()
                target.active = True
                target.previous = False
                target.activated_at = utc_now()
        except IntegrityError as exc:
            raise ModelNotReady(f"another activation of a model ran at the same time; retry ({exc.orig})") from exc
        return await self.get(id)

    async def delete(self, id: str) -> ModelVersion:
        """Remove the row (the caller removes the file). The active version is refused with ``ModelInUse``."""
        async with self._db.sessions.begin() as session:
            row = await session.get(ModelVersionRow, id, with_for_update=True)
            if row is None:
                raise ModelNotFound(f"model {id!r} is not in the registry", param="id")
            if row.active:
                raise ModelInUse(f"model {id} is the active model: activate another version first", param="id")
            deleted = _version(row)
            await session.delete(row)
        return deleted


@dataclass(frozen=True, kw_only=True)
class Job:
    """A download job. ``status``: queued, running, done or failed (the caller decides; this table just keeps it)."""

    id: str
    model_id: str | None
    source: str
    status: str
    bytes_done: int
    bytes_total: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_JOB_UPDATABLE = frozenset({"model_id", "status", "bytes_done", "bytes_total", "error"})


def _job(row: ModelJobRow) -> Job:
    return Job(**{name: getattr(row, name) for name in _JOB_FIELDS})


class JobRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, source: str, *, model_id: str | None = None, status: str = "queued") -> Job:
        now = utc_now()
        row = ModelJobRow(
            id=uuid.uuid4().hex, model_id=model_id, source=source, status=status, bytes_done=0, bytes_total=None,
            error=None, created_at=now, updated_at=now,
        )  # fmt: skip
        async with self._db.sessions.begin() as session:
            session.add(row)
        return _job(row)

    async def get(self, id: str) -> Job:
        async with self._db.sessions() as session:
            row = await session.get(ModelJobRow, id)
        if row is None:
            raise JobNotFound(f"job {id!r} does not exist", param="id")
        return _job(row)

    async def list(self, limit: int = 100) -> builtins.list[Job]:
        """The newest jobs first."""
        query = select(ModelJobRow).order_by(ModelJobRow.created_at.desc(), ModelJobRow.id).limit(limit)
        async with self._db.sessions() as session:
            return [_job(row) for row in (await session.scalars(query)).all()]

    async def update(self, id: str, **values: object) -> Job:
        """Set any of model_id, status, bytes_done, bytes_total, error (``updated_at`` follows)."""
        unknown = set(values) - _JOB_UPDATABLE
        if unknown:
            raise ValueError(f"job fields {sorted(unknown)} cannot be updated")
        if isinstance(values.get("error"), str):
            values["error"] = str(values["error"])[:2048]
        statement = update(ModelJobRow).where(ModelJobRow.id == id).values(**values, updated_at=utc_now())
        async with self._db.engine.begin() as conn:
            result = await conn.execute(statement)
        if not result.rowcount:
            raise JobNotFound(f"job {id!r} does not exist", param="id")
        return await self.get(id)

    async def fail_unfinished(self, reason: str = "interrupted by a restart") -> int:
        """Mark queued and running jobs failed (at start: their process is gone). Returns how many."""
        statement = (
            update(ModelJobRow)
            .where(ModelJobRow.status.in_(("queued", "running")))
            .values(status="failed", error=reason, updated_at=utc_now())
        )
        async with self._db.engine.begin() as conn:
            return int((await conn.execute(statement)).rowcount)
