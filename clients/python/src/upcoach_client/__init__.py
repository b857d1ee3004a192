"""UpCoach AI client SDK: a typed API client (``Client``, ``AsyncClient``), and in ``upcoach_client.device`` the
on-device runtime (model download and verification, local inference, adaptive controller, offline answers,
encrypted outbox and sync)."""

from upcoach_client import errors
from upcoach_client.client import AsyncClient, Client
from upcoach_client.errors import UpcoachError
from upcoach_client.models import (
    Answer,
    Changes,
    Device,
    DeviceProfile,
    ItemResult,
    Manifest,
    Recommendation,
    Registration,
    RouteAdvice,
    SigningKey,
    StreamEvent,
    SyncResult,
)
from upcoach_client.retry import RetryPolicy

__all__ = [
    "Answer",
    "AsyncClient",
    "Changes",
    "Client",
    "Device",
    "DeviceProfile",
    "ItemResult",
    "Manifest",
    "Recommendation",
    "Registration",
    "RetryPolicy",
    "RouteAdvice",
    "SigningKey",
    "StreamEvent",
    "SyncResult",
    "UpcoachError",
    "errors",
]
