"""What each API call sends and how its answer is read: written once, used by both ``Client`` and ``AsyncClient``
(which only differ in how they wait)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from upcoach_client.models import (
    Answer,
    Changes,
    Device,
    DeviceProfile,
    Manifest,
    PrivacyLevel,
    Recommendation,
    Registration,
    RouteAdvice,
    SigningKey,
    SyncResult,
    from_json,
    registration,
    sync_result,
)

T = TypeVar("T")
Message = dict[str, str]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _creating(key: str | None) -> dict[str, str]:
    """Every creating POST carries an Idempotency-Key, so a retry after a cut connection creates nothing twice."""
    return {"Idempotency-Key": key or uuid.uuid4().hex}


def _hybrid_body(
    messages: Sequence[Message],
    privacy_level: PrivacyLevel,
    device: DeviceProfile | None,
    max_tokens: int | None,
    stream: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": list(messages), "routingHints": {"privacyLevel": privacy_level}}
    if device is not None:
        body["deviceProfile"] = {"model": device.model, "capabilities": list(device.capabilities or ()),
                                 "batteryLevel": device.battery_level}  # fmt: skip
    if max_tokens is not None:
        body["maxTokens"] = max_tokens
    if stream:
        body["stream"] = True
    return body


def recommend(profile: DeviceProfile) -> Call[Recommendation]:
    return Call("GET", "/api/ai/models/recommend", lambda b: from_json(Recommendation, b), params=profile.query())


def signing_key() -> Call[SigningKey]:
    return Call("GET", "/api/ai/models/signing-key", lambda b: from_json(SigningKey, b))


def manifest(model_id: str) -> Call[Manifest]:
    return Call("GET", f"/api/ai/models/{model_id}/manifest", lambda b: from_json(Manifest, b))


def bundle_signing_key() -> Call[dict[str, Any]]:
    return Call("GET", "/api/coach/strategies/signing-key", dict)


def strategies_bundle(since: str | None = None) -> Call[dict[str, Any]]:
    return Call("GET", "/api/coach/strategies/bundle", dict, params={"since": since} if since else {})


def register_device(
    *,
    model: str,
    os: str,
    capabilities: Sequence[str],
    ram_mb: int | None,
    model_version: str | None,
    idempotency_key: str | None,
) -> Call[Registration]:
    body = {
        "model": model,
        "os": os,
        "capabilities": list(capabilities),
        "ramMb": ram_mb,
        "modelVersion": model_version,
    }
    return Call("POST", "/api/devices", registration, json=body, headers=_creating(idempotency_key))


def devices() -> Call[list[Device]]:
    return Call("GET", "/api/devices", lambda b: [from_json(Device, d) for d in b["data"]])


def revoke_device(device_id: str) -> Call[Device]:
    return Call("POST", f"/api/devices/{device_id}/revoke", lambda b: from_json(Device, b))


def sync(items: Sequence[dict[str, Any]], model_version: str | None, idempotency_key: str | None) -> Call[SyncResult]:
    body = {"items": list(items), "modelVersion": model_version}
    return Call("POST", "/api/sync", sync_result, json=body, headers=_creating(idempotency_key))


def changes(since: str | None) -> Call[Changes]:
    return Call("GET", "/api/sync", lambda b: from_json(Changes, b), params={"since": since} if since else {})


def route(messages: Sequence[Message], privacy_level: PrivacyLevel, device: DeviceProfile | None) -> Call[RouteAdvice]:
    body = _hybrid_body(messages, privacy_level, device, None, False)
    return Call("POST", "/api/ai/hybrid/route", lambda b: from_json(RouteAdvice, b), json=body)


def process(
    messages: Sequence[Message], privacy_level: PrivacyLevel, device: DeviceProfile | None, max_tokens: int | None
) -> Call[Answer]:
    body = _hybrid_body(messages, privacy_level, device, max_tokens, False)
    return Call("POST", "/api/ai/hybrid/process", Answer.parse, json=body)


def stream(
    messages: Sequence[Message], privacy_level: PrivacyLevel, device: DeviceProfile | None, max_tokens: int | None
) -> Call[None]:
    body = _hybrid_body(messages, privacy_level, device, max_tokens, True)
    return Call("POST", "/api/ai/hybrid/process", lambda _: None, json=body)


def journal_entry(
    transcript: str, recorded_at: str, mood: int | None, idempotency_key: str | None
) -> Call[dict[str, Any]]:
    body = {"transcript": transcript, "recordedAt": recorded_at, "mood": mood}
    return Call("POST", "/api/journal/entries", dict, json=body, headers=_creating(idempotency_key))


def feedback(request_id: str, rating: int, comment: str | None, idempotency_key: str | None) -> Call[dict[str, Any]]:
    body = {"requestId": request_id, "rating": rating, "comment": comment}
    return Call("POST", "/api/ai/feedback", dict, json=body, headers=_creating(idempotency_key))
