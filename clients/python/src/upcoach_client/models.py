"""Typed answers of the API (dataclasses). ``from_json`` reads the camelCase wire form and ignores fields it does not
know, so an older app keeps working against a newer server."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Capability = Literal["local-llm", "npu", "gpu", "neural-engine", "nnapi", "coreml", "metal", "vulkan"]
PrivacyLevel = Literal["public", "private", "sensitive"]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def from_json(cls: type[T], data: dict[str, Any]) -> T:
    """Build a flat dataclass from its camelCase JSON (missing optional fields take their defaults)."""
    names = {_camel(f.name): f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{names[key]: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class DeviceProfile:
    """What the app knows about the phone; ``capabilities`` None: not reported."""

    ram_mb: int | None = None
    model: str = ""
    battery_level: float | None = None
    capabilities: tuple[Capability, ...] | None = None

    def query(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.ram_mb is not None:
            params["ramMb"] = str(self.ram_mb)
        if self.model:
            params["deviceModel"] = self.model
        if self.battery_level is not None:
            params["batteryLevel"] = str(self.battery_level)
        if self.capabilities is not None:
            params["capabilities"] = ",".join(self.capabilities)
        return params


@dataclass(frozen=True)
class Recommendation:
    tier: str
    model_id: str | None
    reasons: list[str]
    size_bytes: int | None = None
    sha256: str | None = None
    quantization: str | None = None
    runtime_reported: bool | None = None
    on_device: bool = False
    accelerators: list[str] = field(default_factory=list)
    installed_id: str | None = None
    artifact_url: str | None = None
    manifest_url: str | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sha256: str
    size: int
    signature: str
    key_id: str


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    algorithm: str
    public_key: str  # base64 of the raw 32-byte Ed25519 key
    public_key_pem: str = ""

    @property
    def raw(self) -> bytes:
        return base64.b64decode(self.public_key)


@dataclass(frozen=True)
class Device:
    id: str
    user_id: str
    model: str
    os: str
    capabilities: list[str]
    ram_mb: int | None
    model_version: str | None
    created_at: str
    last_sync_at: str | None
    revoked_at: str | None
    revoked: bool


@dataclass(frozen=True)
class Registration:
    device: Device
    api_key: str  # the device's own key, shown once: store it in the platform's keystore


@dataclass(frozen=True)
class ItemResult:
    client_id: str
    status: Literal["accepted", "duplicate", "rejected"]
    id: str | None = None
    code: str | None = None
    reason: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class SyncResult:
    results: list[ItemResult]
    accepted: int
    duplicate: int
    rejected: int


@dataclass(frozen=True)
class Changes:
    cursor: str
    full: bool
    settings: dict[str, Any] | None
    grants: list[dict[str, Any]]
    bundle: dict[str, Any] | None
    model_update: dict[str, Any] | None


@dataclass(frozen=True)
class RouteAdvice:
    """The server's routing advice for a request (``POST /api/ai/hybrid/route``)."""

    decision: str
    run_on_device: bool
    reasons: list[str]
    device_reasons: list[str] = field(default_factory=list)
    cloud_allowed: bool = False
    region: str | None = None
    complexity: float | None = None
    estimates: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Answer:
    """A server answer (``POST /api/ai/hybrid/process``)."""

    content: str
    processing_mode: str
    reasons: list[str]
    request_id: str | None
    raw: dict[str, Any]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Answer:
        routing = body.get("routing") or {}
        return cls(
            content=str((body.get("response") or {}).get("content", "")),
            processing_mode=str(body.get("processingMode", "")),
            reasons=list(routing.get("reasons") or []),
            request_id=body.get("requestId"),
            raw=body,
        )


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event: ``token`` ({"content"}), ``done`` (the whole answer) or ``error``."""

    event: str
    data: Any


def registration(body: dict[str, Any]) -> Registration:
    return Registration(from_json(Device, body["device"]), body["apiKey"])


def sync_result(body: dict[str, Any]) -> SyncResult:
    results = [from_json(ItemResult, item) for item in body["results"]]
    return SyncResult(results, body["accepted"], body["duplicate"], body["rejected"])
