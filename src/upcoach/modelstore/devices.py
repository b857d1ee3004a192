"""Which model a phone should run on-device: a pure function of what the app reports about the device.

The thresholds are named so the dashboard and the app team can read the rule: a 0.5B Q4 model needs about 0.5 GB
of weights plus KV cache and the app's own memory, which is comfortable from 6 GB of RAM; the 270M model fits from
3 GB; below that, or on a nearly empty battery, or on a device that cannot run a model at all, the server answers.
Battery and capability rules are the routing policy's, so the app gets the same answer from both places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from upcoach.modelstore.catalog import CATALOG
from upcoach.routing.policy import LOW_BATTERY, ON_DEVICE_CAPABILITIES

Tier = Literal["flagship", "mid-range", "low-end"]

FLAGSHIP_MIN_RAM_MB = 6144
MID_RANGE_MIN_RAM_MB = 3072
LOW_BATTERY_PERCENT = LOW_BATTERY
MAX_RAM_MB = 1 << 22  # 4 TB: anything larger is a client bug, not a phone

TIER_MODELS: dict[Tier, str | None] = {
    "flagship": "qwen2.5-0.5b-instruct",
    "mid-range": "gemma3-270m",
    "low-end": None,
}

# Phones that report enough RAM but are too slow (old SoCs, throttling) for on-device generation.
KNOWN_LOW_END_MODELS = frozenset(
    {
        "iphone 6",
        "iphone 6s",
        "iphone 7",
        "iphone 8",
        "iphone se",
        "galaxy a10",
        "galaxy a02",
        "galaxy j2",
        "moto e",
        "redmi 9a",
        "nokia 1",
    }
)


@dataclass(frozen=True)
class DeviceQuery:
    """``capabilities`` None means the app did not say; an empty set means it said "none"."""

    ram_mb: int | None = None
    device_model: str = ""
    battery_level: float | None = None
    capabilities: frozenset[str] | None = None


@dataclass(frozen=True)
class Recommendation:
    tier: Tier
    model_id: str | None
    reasons: tuple[str, ...]
    size_bytes: int | None
    sha256: str | None
    quantization: str | None


def _is_known_low_end(device_model: str) -> bool:
    name = " ".join(device_model.lower().split())
    return any(name == known or name.startswith(known + " ") for known in KNOWN_LOW_END_MODELS)


def _tier(query: DeviceQuery) -> tuple[Tier, list[str]]:
    if query.capabilities is not None and not (query.capabilities & ON_DEVICE_CAPABILITIES):
        return "low-end", ["device does not report the local-llm capability: use the server"]
    if query.device_model and _is_known_low_end(query.device_model):
        return "low-end", [f"{query.device_model!r} is a known low-end device: use the server"]
    if query.battery_level is not None and query.battery_level < LOW_BATTERY_PERCENT:
        return "low-end", [f"battery {query.battery_level:.0f}% < {LOW_BATTERY_PERCENT}%: spare the device"]
    if query.ram_mb is None:
        return "mid-range", ["RAM not reported: the smallest on-device model is the safe choice"]
    if query.ram_mb >= FLAGSHIP_MIN_RAM_MB:
        return "flagship", [f"RAM {query.ram_mb} MB >= {FLAGSHIP_MIN_RAM_MB} MB: the 0.5B chat model fits"]
    if query.ram_mb >= MID_RANGE_MIN_RAM_MB:
        return "mid-range", [
            f"RAM {query.ram_mb} MB >= {MID_RANGE_MIN_RAM_MB} MB but < {FLAGSHIP_MIN_RAM_MB} MB: the 270M model fits"
        ]
    return "low-end", [f"RAM {query.ram_mb} MB < {MID_RANGE_MIN_RAM_MB} MB: use the server"]


def recommend(query: DeviceQuery) -> Recommendation:
    tier, reasons = _tier(query)
    model_id = TIER_MODELS[tier]
    entry = CATALOG.get(model_id) if model_id else None
    return Recommendation(
        tier=tier,
        model_id=model_id,
        reasons=tuple(reasons),
        size_bytes=entry.size if entry else None,
        sha256=entry.sha256 if entry else None,
        quantization=entry.quantization if entry else None,
    )
