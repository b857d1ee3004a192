"""Wire shapes of /api/devices and /api/sync (camelCase)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from upcoach.modelstore.devices import MAX_RAM_MB, Capability

CLIENT_ID = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_BATCH = 500


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class DeviceIn(_Camel):
    model: str = Field(min_length=1, max_length=128, description="e.g. 'Pixel 8'")
    os: str = Field(min_length=1, max_length=64, description="e.g. 'Android 15'")
    capabilities: list[Capability] = Field(default_factory=list, max_length=len(Capability))
    ram_mb: int | None = Field(default=None, ge=1, le=MAX_RAM_MB)
    model_version: str | None = Field(default=None, max_length=200, description="installed model id, name@version")


class DeviceOut(_Camel):
    id: str
    user_id: str
    model: str
    os: str
    capabilities: list[Capability]
    ram_mb: int | None
    model_version: str | None
    created_at: str
    last_sync_at: str | None
    revoked_at: str | None
    revoked: bool


class RegisteredOut(_Camel):
    device: DeviceOut
    api_key: str = Field(description="the device's own API key: shown once")


class DeviceList(_Camel):
    object: Literal["list"]
    data: list[DeviceOut]


class SyncItemIn(_Camel):
    """One outbox item. ``data`` is checked per kind (journal, rating, usage) and a bad one is rejected alone."""

    client_id: str = Field(pattern=CLIENT_ID, description="the device's own id of this item: the idempotency key")
    kind: str = Field(min_length=1, max_length=32, description="journal | rating | usage")
    created_at: str | None = Field(default=None, max_length=64)
    data: dict[str, Any]


class SyncBatch(_Camel):
    items: list[SyncItemIn] = Field(max_length=MAX_BATCH)
    model_version: str | None = Field(default=None, max_length=200, description="the model the device runs now")


class ItemResultOut(_Camel):
    client_id: str
    status: Literal["accepted", "duplicate", "rejected"]
    id: str | None
    code: str | None
    reason: str | None
    retryable: bool


class SyncOut(_Camel):
    results: list[ItemResultOut]
    accepted: int
    duplicate: int
    rejected: int


class BundleChange(_Camel):
    version: str
    since: str | None
    url: str


class ModelUpdate(_Camel):
    model_id: str
    sha256: str
    size: int | None
    artifact_url: str
    manifest_url: str


class GrantOut(_Camel):
    id: str
    user_id: str
    coach_id: str
    scopes: list[str]
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    active: bool


class ChangesOut(_Camel):
    cursor: str = Field(description="pass it as ?since= next time")
    full: bool
    settings: dict[str, Any] | None
    grants: list[GrantOut]
    bundle: BundleChange | None
    model_update: ModelUpdate | None
