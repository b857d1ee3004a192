"""Devices and offline sync: ``/api/devices`` (register, list, revoke) and ``/api/sync`` (deliver the outbox, ask
what changed). A device registers with the user's credentials and gets a key of its own; it then calls everything
with that key, which its owner (or an admin) can revoke from the dashboard or here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.device_schemas import (
    ChangesOut,
    DeviceIn,
    DeviceList,
    DeviceOut,
    RegisteredOut,
    SyncBatch,
    SyncOut,
)
from upcoach.api.errors import error_responses
from upcoach.api.idempotency import IDEMPOTENT
from upcoach.devices.changes import ChangeFeed
from upcoach.devices.registry import Devices
from upcoach.devices.sync import Cursor, SyncService
from upcoach.errors import Unavailable
from upcoach.security.acting import ACT
from upcoach.security.auth import Principal
from upcoach.security.keys import Role
from upcoach.services import Services

router = APIRouter(prefix="/api", tags=["devices"])

User = Annotated[Principal, Depends(caller(*CHAT_ROLES, Role.admin))]
NOT_FOUND = error_responses(404)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _devices(request: Request) -> Devices:
    devices = _services(request).devices
    if devices is None:
        raise Unavailable("devices are not available on this server")
    return devices


def _sync(request: Request) -> tuple[SyncService, ChangeFeed]:
    services = _services(request)
    if services.sync is None or services.changes is None:
        raise Unavailable("sync is not available on this server")
    return services.sync, services.changes


@router.post("/devices", status_code=201, response_model=RegisteredOut, dependencies=IDEMPOTENT)
async def register(body: DeviceIn, request: Request, principal: User) -> dict[str, object]:
    """Register a phone; the answer holds its API key, shown once: the app stores it and uses it from now on."""
    user_id = await _services(request).subject(request, ACT)
    device, token = await _devices(request).register(
        user_id, model=body.model, os=body.os, capabilities=[c.value for c in body.capabilities],
        ram_mb=body.ram_mb, model_version=body.model_version,
        actor=principal.user_id, actor_role=principal.role.value,
    )  # fmt: skip
    return {"device": device.to_json(), "apiKey": token}


@router.get("/devices", response_model=DeviceList)
async def list_devices(request: Request, _: User) -> dict[str, object]:
    user_id = await _services(request).subject(request, ACT)
    return {"object": "list", "data": [d.to_json() for d in await _devices(request).list(user_id)]}


@router.post("/devices/{device_id}/revoke", response_model=DeviceOut, responses=NOT_FOUND)
async def revoke(
    device_id: Annotated[str, Path(max_length=64)], request: Request, principal: User
) -> dict[str, object]:
    """Revoke a device and its key at once (idempotent). Users revoke their own devices."""
    user_id = await _services(request).subject(request, ACT)
    device = await _devices(request).revoke(
        device_id, user_id, actor=principal.user_id, actor_role=principal.role.value
    )
    return device.to_json()


@router.post("/sync", response_model=SyncOut, dependencies=IDEMPOTENT)
async def deliver(body: SyncBatch, request: Request, principal: User) -> dict[str, object]:
    """Deliver outbox items: one result per item (accepted, duplicate or rejected with why); replaying a batch
    changes nothing."""
    user_id = await _services(request).subject(request, ACT)
    sync, _ = _sync(request)
    device = await _devices(request).for_key(principal.key_id)
    items = [(item.client_id, item.kind, item.data) for item in body.items]
    results = await sync.apply(user_id, device, items, model_version=body.model_version)
    counts = {status: sum(r.status == status for r in results) for status in ("accepted", "duplicate", "rejected")}
    return {"results": [r.to_json() for r in results], **counts}


@router.get("/sync", response_model=ChangesOut)
async def changes(
    request: Request,
    principal: User,
    since: Annotated[str | None, Query(max_length=512, description="the cursor of the last answer")] = None,
) -> dict[str, object]:
    """What changed for this user and device since the cursor: settings, grants, bundle delta, model update."""
    user_id = await _services(request).subject(request, ACT)
    _, feed = _sync(request)
    cursor = Cursor.decode(since) if since else None
    device = await _devices(request).for_key(principal.key_id)
    return await feed.since(user_id, device, cursor)
