"""Per-user privacy settings: what the user chose, every version of it, and who changed it.

The routing engine reads them on every request, so reads are cached in process for a few seconds
(``UPCOACH_PRIVACY_CACHE_SECONDS``); this process's own updates invalidate it at once. With Redis (several
workers) every save bumps a counter there that each read checks first (storage/generation.py), so a user who
switches to local-only is never sent to the cloud by a worker that cached the old choice.
Defaults apply to users who never saved anything (version 0).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Literal

from upcoach.config import Settings
from upcoach.errors import InvalidRequest, VersionConflict
from upcoach.observability.audit import AuditLog
from upcoach.storage.database import Database
from upcoach.storage.generation import Generation, GenerationCache
from upcoach.storage.privacy import PrivacyRepository, SettingsVersion, StaleVersion
from upcoach.storage.tables import utc_now

log = logging.getLogger(__name__)

ProcessingMode = Literal["local_only", "hybrid", "cloud_allowed"]
PROCESSING_MODES: tuple[ProcessingMode, ...] = ("local_only", "hybrid", "cloud_allowed")
EDITABLE = (
    "processing_mode",
    "special_category_cloud_opt_in",
    "region",
    "retention_days",
    "analytics_opt_in",
    "do_not_share",
)
REGION_FORMAT = re.compile(r"[a-z][a-z0-9-]{0,31}")
MIN_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650
MAX_CACHED_USERS = 50_000


@dataclass(frozen=True)
class PrivacySettings:
    processing_mode: ProcessingMode = "hybrid"
    special_category_cloud_opt_in: bool = False
    region: str | None = None  # None: no residency constraint
    retention_days: int = 365
    analytics_opt_in: bool = False
    do_not_share: bool = False  # CCPA "do not sell or share": no cloud at all
    version: int = 0  # 0: never saved, these are the defaults
    updated_at: datetime | None = None

    @property
    def cloud_refusal(self) -> str | None:
        """The setting that keeps every request of this user off the cloud, or None."""
        if self.do_not_share:
            return "user setting: do_not_share (CCPA): never the cloud"
        if self.processing_mode == "local_only":
            return "user setting: local_only"
        return None

    def editable(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in EDITABLE}


def _validate(name: str, value: object) -> object:
    """One editable field's value, checked strictly: JSON clients must send real booleans and integers."""
    if name not in EDITABLE:
        raise InvalidRequest(f"{name}: unknown privacy setting; editable: {', '.join(EDITABLE)}", param=name)
    if name == "processing_mode":
        if value not in PROCESSING_MODES:
            raise InvalidRequest(f"{name}: must be one of {', '.join(PROCESSING_MODES)}", param=name)
    elif name == "region":
        if value is not None and not (isinstance(value, str) and REGION_FORMAT.fullmatch(value)):
            raise InvalidRequest(f"{name}: a region code like 'eu' or 'us' (lower case), or null", param=name)
    elif name == "retention_days":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{name}: must be a whole number of days", param=name)
        if not MIN_RETENTION_DAYS <= value <= MAX_RETENTION_DAYS:
            raise InvalidRequest(
                f"{name}: must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS} days", param=name
            )
    elif not isinstance(value, bool):
        raise InvalidRequest(f"{name}: must be true or false", param=name)
    return value


class PrivacyService:
    def __init__(self, db: Database, audit: AuditLog | None, settings: Settings, redis: object | None = None) -> None:
        self._repository = PrivacyRepository(db)
        self._audit = audit
        self._settings = settings
        self._cache: dict[str, tuple[float, PrivacySettings]] = {}
        self._ttl = settings.privacy_cache_seconds
        self._shared: GenerationCache[str, PrivacySettings] | None = (
            GenerationCache(Generation(redis, "privacy"), ttl=self._ttl, max_entries=MAX_CACHED_USERS,
                            clock=time.monotonic)
            if redis is not None and self._ttl > 0
            else None
        )  # fmt: skip

    @property
    def repository(self) -> PrivacyRepository:
        return self._repository

    @property
    def defaults(self) -> PrivacySettings:
        return PrivacySettings(retention_days=self._settings.default_retention_days)

    @property
    def available_regions(self) -> list[str]:
        return sorted(self._settings.cloud_regions)

    def region_notice(self, region: str | None) -> str | None:
        """What a region without a configured cloud endpoint means for the user, or None."""
        if region is None or region in self._settings.cloud_regions:
            return None
        return f"region {region!r} has no cloud endpoint configured: your requests are processed locally only"

    async def get(self, user_id: str) -> PrivacySettings:
        if self._shared is not None:
            cached, generation = await self._shared.get(user_id)
            if cached is not None:
                return cached
            stored = await self._repository.current(user_id)
            result = self.defaults if stored is None else _from_stored(stored)
            self._shared.put(user_id, result, generation)
            return result
        now = time.monotonic()
        cached = self._cache.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = await self._repository.current(user_id)
        result = self.defaults if stored is None else _from_stored(stored)
        if len(self._cache) >= MAX_CACHED_USERS:
            self._cache.clear()
        if self._ttl > 0:
            self._cache[user_id] = (now + self._ttl, result)
        return result

    def invalidate(self, user_id: str) -> None:
        self._cache.pop(user_id, None)
        if self._shared is not None:
            self._shared.drop(user_id)

    async def _changed(self, user_id: str) -> None:
        """Drop the cached settings here and tell the other workers to drop theirs."""
        self.invalidate(user_id)
        if self._shared is not None:
            try:
                await self._shared.generation.bump()
            except Exception:
                log.exception("privacy settings of %s changed, but other workers may use the old ones for %.0f s",
                              user_id, self._ttl)  # fmt: skip

    async def update(
        self,
        user_id: str,
        changes: Mapping[str, object],
        *,
        actor: str,
        actor_role: str,
        expected_version: int | None = None,
    ) -> PrivacySettings:
        """Validate ``changes`` (a subset of EDITABLE), store them as the next version and audit the change.

        ``expected_version`` is the version the caller edited; a different current version is a 409
        ``version_conflict``. A change that changes nothing stores nothing and returns the current settings.
        """
        clean = {name: _validate(name, value) for name, value in changes.items()}
        self.invalidate(user_id)
        stored = await self._repository.current(user_id)
        current = self.defaults if stored is None else _from_stored(stored)
        if expected_version is not None and expected_version != current.version:
            raise VersionConflict(
                f"privacy settings are at version {current.version}, not {expected_version}: reload and retry",
                param="version",
            )
        changed = {name: value for name, value in clean.items() if getattr(current, name) != value}
        if not changed:
            return current
        new = replace(current, **changed, version=current.version + 1, updated_at=utc_now())  # type: ignore[arg-type]
        try:
            await self._repository.save(
                SettingsVersion(user_id=user_id, actor=actor, actor_role=actor_role, **_stored_fields(new))
            )
        except StaleVersion as exc:
            raise VersionConflict(
                f"privacy settings of {user_id!r} were changed concurrently: reload and retry", param="version"
            ) from exc
        finally:
            await self._changed(user_id)
        if self._audit is not None:
            await self._audit.append(
                actor,
                actor_role,
                "privacy.settings.update",
                target=user_id,
                details={
                    "version": new.version,
                    "fields": sorted(changed),
                    "changes": {
                        name: {"old": getattr(current, name), "new": changed[name]} for name in sorted(changed)
                    },
                },
            )
        return new

    async def history(self, user_id: str) -> list[SettingsVersion]:
        """Every stored version, oldest first, with who stored it."""
        return await self._repository.history(user_id)

    async def erase(self, user_id: str) -> int:
        """Forget the user's settings and history (data-subject erasure): they are back to the defaults."""
        try:
            return await self._repository.delete_user(user_id)
        finally:
            await self._changed(user_id)


_SETTINGS_FIELDS = tuple(f.name for f in fields(PrivacySettings))


def _from_stored(stored: SettingsVersion) -> PrivacySettings:
    return PrivacySettings(**{name: getattr(stored, name) for name in _SETTINGS_FIELDS})


def _stored_fields(settings: PrivacySettings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in _SETTINGS_FIELDS}
