"""Offline sync: a device delivers its outbox (``apply``) and asks what changed since its cursor (``changes``).

Every outbox item carries the client's own id. The first delivery claims ``(user, client id)`` in ``sync_items``
before the item is applied, so a second delivery of the same id (a replayed batch, a retry after a cut connection)
is answered ``duplicate`` and applies nothing. An item that is refused (bad data, a rating of a request never served
to this user; ``retryable`` when the reason may pass, like a service that is unavailable) is ``rejected`` with the
reason and its claim released: nothing was applied, so delivering it again is judged again, and a later delivery
of a fixed or now-applicable item can still be accepted once.

Item kinds are a table of (data schema, applier), so a new kind is one entry. An unknown kind is rejected per item,
not for the whole batch: an app newer than the server still delivers everything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from upcoach.coaching.journal import MAX_TRANSCRIPT_CHARS, Journal
from upcoach.coaching.ratings import Ratings
from upcoach.devices.registry import Device
from upcoach.errors import InvalidRequest, Unavailable, UpcoachError
from upcoach.storage.devices import DeviceRepository, DeviceUsageRepository, SyncItemRepository
from upcoach.storage.tables import DeviceUsageRow, SyncItemRow, utc_now

# The largest noisy count one usage item may carry: a phone does not run more generations than this in a day.
MAX_USAGE_COUNT = 100_000


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JournalData(_Data):
    transcript: str = Field(min_length=1, max_length=MAX_TRANSCRIPT_CHARS)
    recorded_at: AwareDatetime = Field(alias="recordedAt")
    mood: int | None = Field(default=None, ge=1, le=5)

    @field_validator("recorded_at")
    @classmethod
    def _has_utc(cls, value: datetime) -> datetime:
        try:
            value.astimezone(UTC)  # year 1 at +05:00 has no UTC time: stored as UTC, it would overflow
        except OverflowError as exc:
            raise ValueError("recordedAt is out of range") from exc
        return value


class RatingData(_Data):
    request_id: str = Field(alias="requestId", min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)


class UsageData(_Data):
    """Counts only, already noised on the device (local differential privacy with ``epsilon``): never any text."""

    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    local_generations: float = Field(
        alias="localGenerations", ge=-MAX_USAGE_COUNT, le=MAX_USAGE_COUNT, allow_inf_nan=False
    )
    library_answers: float = Field(alias="libraryAnswers", ge=-MAX_USAGE_COUNT, le=MAX_USAGE_COUNT, allow_inf_nan=False)
    epsilon: float = Field(gt=0, le=10, allow_inf_nan=False)


@dataclass(frozen=True)
class ItemResult:
    client_id: str
    status: str  # accepted | duplicate | rejected
    id: str | None = None
    code: str | None = None
    reason: str | None = None
    retryable: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "clientId": self.client_id,
            "status": self.status,
            "id": self.id,
            "code": self.code,
            "reason": self.reason,
            "retryable": self.retryable,
        }


Applier = Callable[[str, Device | None, Any], Awaitable[str]]


class SyncService:
    def __init__(
        self,
        items: SyncItemRepository,
        usage: DeviceUsageRepository,
        devices: DeviceRepository,
        *,
        journal: Journal | None,
        ratings: Ratings | None,
    ) -> None:
        self._items = items
        self._usage = usage
        self._devices = devices
        self._journal = journal
        self._ratings = ratings
        self._kinds: dict[str, tuple[type[_Data], Applier]] = {
            "journal": (JournalData, self._apply_journal),
            "rating": (RatingData, self._apply_rating),
            "usage": (UsageData, self._apply_usage),
        }

    async def device_totals(self, since: datetime | None = None) -> tuple[float, float]:
        """(generations on phones, library answers on phones) reported since ``since``: sums of noisy counts."""
        return await self._usage.totals(since.date().isoformat() if since is not None else None)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    async def apply(
        self,
        user_id: str,
        device: Device | None,
        items: list[tuple[str, str, dict[str, Any]]],
        *,
        model_version: str | None = None,
    ) -> list[ItemResult]:
        """Apply ``(client id, kind, data)`` items in order; one result per item, in the same order. The device's
        last sync time (and the model version it reports) is recorded."""
        results = []
        seen: set[str] = set()
        for client_id, kind, data in items:
            if client_id in seen:
                results.append(
                    ItemResult(client_id, "duplicate", reason="the same client id appears earlier in this batch")
                )
                continue
            seen.add(client_id)
            results.append(await self._one(user_id, device, client_id, kind, data))
        if device is not None:
            await self._devices.synced(device.id, utc_now(), model_version)
        return results

    async def _one(
        self, user_id: str, device: Device | None, client_id: str, kind: str, data: dict[str, Any]
    ) -> ItemResult:
        entry = self._kinds.get(kind)
        if entry is None:
            return ItemResult(client_id, "rejected", code="unknown_kind",
                              reason=f"unknown item kind {kind!r}; known: {', '.join(self.kinds)}")  # fmt: skip
        schema, applier = entry
        try:
            parsed = schema.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or kind
            return ItemResult(client_id, "rejected", code="invalid_request", reason=f"{where}: {first['msg']}")
        claim = SyncItemRow(user_id=user_id, client_id=client_id, device_id=device.id if device else None, kind=kind,
                            status="pending", created_at=utc_now())  # fmt: skip
        earlier = await self._items.claim(claim)
        if earlier is not None:
            return ItemResult(client_id, "duplicate", id=earlier.result_id, reason=f"already {earlier.status}")
        try:
            result_id = await applier(user_id, device, parsed)
        except UpcoachError as exc:
            await self._items.release(user_id, client_id)
            return ItemResult(client_id, "rejected", code=exc.code, reason=exc.message, retryable=exc.status >= 500)
        except BaseException:
            await self._items.release(user_id, client_id)
            raise
        await self._items.finish(user_id, client_id, "accepted", result_id, None)
        return ItemResult(client_id, "accepted", id=result_id)

    async def _apply_journal(self, user_id: str, _: Device | None, data: JournalData) -> str:
        if self._journal is None:
            raise _unavailable("the journal")
        return (await self._journal.add(user_id, data.transcript, data.recorded_at, data.mood)).id

    async def _apply_rating(self, user_id: str, _: Device | None, data: RatingData) -> str:
        if self._ratings is None:
            raise _unavailable("ratings")
        await self._ratings.rate(user_id, data.request_id, data.rating, data.comment)
        return data.request_id

    async def _apply_usage(self, user_id: str, device: Device | None, data: UsageData) -> str:
        row = DeviceUsageRow(
            user_id=user_id, device_id=device.id if device else None, day=data.day,
            local_generations=data.local_generations, library_answers=data.library_answers, epsilon=data.epsilon,
        )  # fmt: skip
        await self._usage.add(row)
        return str(row.id)


def _unavailable(what: str) -> UpcoachError:
    return Unavailable(f"{what} is not available on this server")


# ---- the cursor of GET /api/sync ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cursor:
    """What the device was told last: when, which settings version and which strategies bundle version."""

    at: datetime
    settings_version: int
    bundle_version: str | None

    def encode(self) -> str:
        raw = json.dumps({"t": self.at.isoformat(), "s": self.settings_version, "b": self.bundle_version})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            at = datetime.fromisoformat(raw["t"])
            settings_version, bundle_version = raw["s"], raw["b"]
            if at.utcoffset() is None or not isinstance(settings_version, int):
                raise ValueError("malformed")
            if bundle_version is not None and not isinstance(bundle_version, str):
                raise ValueError("malformed")
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidRequest("since: not a cursor this server issued", param="since") from exc
        return cls(at.astimezone(UTC), settings_version, bundle_version)
