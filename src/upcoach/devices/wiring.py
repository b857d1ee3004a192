"""Builds the device services into ``Services`` (called by create_app once journal, ratings and coach exist)."""

from __future__ import annotations

from upcoach.devices.changes import ChangeFeed
from upcoach.devices.registry import Devices
from upcoach.devices.sync import SyncService
from upcoach.modelstore.registry import ModelRegistry
from upcoach.security.keys import ApiKeys
from upcoach.services import Services
from upcoach.storage.devices import DeviceRepository, DeviceUsageRepository, IdempotencyRepository, SyncItemRepository


def wire_devices(services: Services, keys: ApiKeys, registry: ModelRegistry | None) -> None:
    devices = DeviceRepository(services.db)
    items = SyncItemRepository(services.db)
    usage = DeviceUsageRepository(services.db)
    services.devices = Devices(devices, keys, services.audit)
    services.sync = SyncService(items, usage, devices, journal=services.journal, ratings=services.ratings)
    services.changes = ChangeFeed(services.privacy, services.grants, services.coach, registry)
    if services.rights is not None:
        services.rights.register("devices", services.devices.export, services.devices.erase)
        # Delivered-item ids and noisy counts hold no content, but they are the user's: erased with them.
        services.rights.register("syncItems", _nothing, items.delete_for_user)
        services.rights.register("deviceUsage", _nothing, usage.delete_for_user)
        # Stored Idempotency-Key answers are copies of what the user's POSTs created (a journal entry's transcript):
        # erased with it. An answer completed after the erasure is refused by the fence (storage/devices.py).
        answers = IdempotencyRepository(services.db)
        services.rights.register("storedAnswers", answers.stored_for, answers.delete_for_user)


async def _nothing(_: str) -> list[dict[str, object]]:
    return []
