"""Registered devices. Each device gets an API key of its own when it registers, so revoking the device revokes
exactly that key: the phone is refused at once, the user's other devices and keys keep working."""

from __future__ import annotations

import builtins
import uuid
from dataclasses import dataclass
from datetime import datetime

from upcoach.errors import NotFound
from upcoach.observability.audit import AuditLog
from upcoach.security.keys import ApiKeys, Role
from upcoach.storage.devices import DeviceRepository
from upcoach.storage.tables import DeviceRow, utc_now


@dataclass(frozen=True)
class Device:
    id: str
    user_id: str
    key_id: str
    model: str
    os: str
    capabilities: tuple[str, ...]
    ram_mb: int | None
    model_version: str | None
    created_at: datetime
    last_sync_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "userId": self.user_id,
            "model": self.model,
            "os": self.os,
            "capabilities": list(self.capabilities),
            "ramMb": self.ram_mb,
            "modelVersion": self.model_version,
            "createdAt": self.created_at.isoformat(),
            "lastSyncAt": self.last_sync_at.isoformat() if self.last_sync_at else None,
            "revokedAt": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked": self.revoked,
        }


def _device(row: DeviceRow) -> Device:
    return Device(
        row.id, row.user_id, row.key_id, row.model, row.os, tuple(row.capabilities), row.ram_mb, row.model_version,
        row.created_at, row.last_sync_at, row.revoked_at,
    )  # fmt: skip


class Devices:
    def __init__(self, repository: DeviceRepository, keys: ApiKeys, audit: AuditLog | None) -> None:
        self.repository = repository
        self._keys = keys
        self._audit = audit

    async def register(
        self,
        user_id: str,
        *,
        model: str,
        os: str,
        capabilities: builtins.list[str],
        ram_mb: int | None,
        model_version: str | None,
        actor: str,
        actor_role: str,
    ) -> tuple[Device, str]:
        """(the device, its API key: shown once). The key has the user role and acts only as ``user_id``."""
        issued = await self._keys.create(user_id, Role.user, actor=actor, actor_role=actor_role)
        row = DeviceRow(
            id=uuid.uuid4().hex, user_id=user_id, key_id=issued.key.id, model=model, os=os,
            capabilities=sorted(set(capabilities)), ram_mb=ram_mb, model_version=model_version, created_at=utc_now(),
        )  # fmt: skip
        await self.repository.add(row)
        if self._audit is not None:
            await self._audit.append(
                actor, actor_role, "device.registered", target=row.id, details={"user_id": user_id}
            )
        return _device(row), issued.token

    async def list(self, user_id: str | None = None) -> builtins.list[Device]:
        return [_device(row) for row in await self.repository.list(user_id)]

    async def get(self, device_id: str, user_id: str | None) -> Device:
        """The device, if it is ``user_id``'s (any user's when None); someone else's answers like a missing one."""
        row = await self.repository.get(device_id)
        if row is None or (user_id is not None and row.user_id != user_id):
            raise NotFound(f"device {device_id!r} does not exist", param="deviceId")
        return _device(row)

    async def for_key(self, key_id: str | None) -> Device | None:
        row = await self.repository.by_key(key_id) if key_id else None
        return _device(row) if row is not None else None

    async def revoke(self, device_id: str, user_id: str | None, *, actor: str, actor_role: str) -> Device:
        """Revoke the device and its key (idempotent). ``user_id`` None: an admin, who may revoke any device."""
        device = await self.get(device_id, user_id)
        await self._keys.revoke(device.key_id, actor=actor, actor_role=actor_role)
        if await self.repository.revoke(device_id, utc_now()) and self._audit is not None:
            await self._audit.append(actor, actor_role, "device.revoked", target=device_id)
        return await self.get(device_id, user_id)

    async def export(self, user_id: str) -> builtins.list[dict[str, object]]:
        return [device.to_json() for device in await self.list(user_id)]

    async def erase(self, user_id: str) -> int:
        for device in await self.list(user_id):
            if not device.revoked:
                await self._keys.revoke(device.key_id)
        return await self.repository.delete_for_user(user_id)
