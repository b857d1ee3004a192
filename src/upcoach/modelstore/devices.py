"""Which model a phone should run on-device: a pure function of what the app reports about the device.

Two questions are answered apart. The hardware (RAM, accelerators, battery, known slow models) decides which model
the phone *could* run; whether the app *reports the runtime* (capability ``local-llm``) decides whether it can run
it today. A phone with 8 GB and an NPU whose app does not ship the runtime yet is a flagship that should use the
server for now, not a low-end phone.

The thresholds are named so the dashboard and the app team can read the rule: a 0.5B Q4 model needs about 0.5 GB
of weights plus KV cache and the app's own memory, which is comfortable from 6 GB of RAM; the 270M model fits from
3 GB; below that, or on a nearly empty battery, the server answers. A phone that reports its capabilities and no
accelerator among them runs at most the 270M model: the 0.5B model on CPU cores alone is slower than reading speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from upcoach.modelstore.catalog import CATALOG
from upcoach.routing.policy import LOW_BATTERY

Tier = Literal["flagship", "mid-range", "low-end"]


class Capability(StrEnum):
    """What a device can do, as the app reports it (declared in the OpenAPI spec)."""

    local_llm = "local-llm"  # the app ships the on-device runtime (llama.cpp)
    npu = "npu"
    gpu = "gpu"
    neural_engine = "neural-engine"
    nnapi = "nnapi"
    coreml = "coreml"
    metal = "metal"
    vulkan = "vulkan"


ACCELERATORS = frozenset(Capability) - {Capability.local_llm}
# Spellings older app builds send for the runtime capability.
CAPABILITY_ALIASES = dict.fromkeys(("local_llm", "on-device-llm", "llm"), Capability.local_llm)

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


def parse_capabilities(values: list[str]) -> frozenset[Capability]:
    """Capabilities from the wire (case-insensitive, aliases accepted); ValueError names an unknown one."""
    parsed: set[Capability] = set()
    for raw in values:
        value = raw.strip().lower()
        if not value:
            continue
        if value in CAPABILITY_ALIASES:
            parsed.add(CAPABILITY_ALIASES[value])
            continue
        try:
            parsed.add(Capability(value))
        except ValueError:
            known = ", ".join(c.value for c in Capability)
            raise ValueError(f"unknown capability {raw.strip()!r}; known: {known}") from None
    return frozenset(parsed)


@dataclass(frozen=True)
class DeviceQuery:
    """``capabilities`` None means the app did not say; an empty set means it said "none"."""

    ram_mb: int | None = None
    device_model: str = ""
    battery_level: float | None = None
    capabilities: frozenset[str] | None = None


@dataclass(frozen=True)
class Recommendation:
    """``tier``/``model_id``: what the hardware could run. ``runtime_reported``: the app says it ships the runtime
    (None: it reported no capabilities). ``on_device``: run the model on the phone now (a model and the runtime)."""

    tier: Tier
    model_id: str | None
    reasons: tuple[str, ...]
    size_bytes: int | None
    sha256: str | None
    quantization: str | None
    runtime_reported: bool | None = None
    on_device: bool = False
    accelerators: tuple[str, ...] = ()


def _is_known_low_end(device_model: str) -> bool:
    name = " ".join(device_model.lower().split())
    return any(name == known or name.startswith(known + " ") for known in KNOWN_LOW_END_MODELS)


def _tier(query: DeviceQuery, accelerators: list[str]) -> tuple[Tier, list[str]]:
    if query.device_model and _is_known_low_end(query.device_model):
        return "low-end", [f"{query.device_model!r} is a known low-end device: use the server"]
    if query.battery_level is not None and query.battery_level < LOW_BATTERY_PERCENT:
        return "low-end", [f"battery {query.battery_level:.0f}% < {LOW_BATTERY_PERCENT}%: spare the device"]
    if query.ram_mb is None:
        return "mid-range", ["RAM not reported: the smallest on-device model is the safe choice"]
    if query.ram_mb >= FLAGSHIP_MIN_RAM_MB:
        if query.capabilities is not None and not accelerators:
            return "mid-range", [
                f"RAM {query.ram_mb} MB >= {FLAGSHIP_MIN_RAM_MB} MB but no accelerator reported: "
                "the 270M model runs on CPU cores alone"
            ]
        return "flagship", [f"RAM {query.ram_mb} MB >= {FLAGSHIP_MIN_RAM_MB} MB: the 0.5B chat model fits"]
    if query.ram_mb >= MID_RANGE_MIN_RAM_MB:
        return "mid-range", [
            f"RAM {query.ram_mb} MB >= {MID_RANGE_MIN_RAM_MB} MB but < {FLAGSHIP_MIN_RAM_MB} MB: the 270M model fits"
        ]
    return "low-end", [f"RAM {query.ram_mb} MB < {MID_RANGE_MIN_RAM_MB} MB: use the server"]


def recommend(query: DeviceQuery) -> Recommendation:
    caps = query.capabilities
    accelerators = sorted(c for c in caps or () if c in ACCELERATORS)
    tier, reasons = _tier(query, accelerators)
    if accelerators and tier != "low-end":
        reasons.append(f"accelerators: {', '.join(accelerators)}")
    model_id = TIER_MODELS[tier]
    entry = CATALOG.get(model_id) if model_id else None
    runtime = None if caps is None else bool(caps & {Capability.local_llm, *CAPABILITY_ALIASES})
    if model_id is not None:
        if runtime is False:
            reasons.append("the app does not report the local-llm runtime: use the server until it ships")
        elif runtime is None:
            reasons.append("capabilities not reported: run on device only if the app ships the local-llm runtime")
    return Recommendation(
        tier=tier,
        model_id=model_id,
        reasons=tuple(reasons),
        size_bytes=entry.size if entry else None,
        sha256=entry.sha256 if entry else None,
        quantization=entry.quantization if entry else None,
        runtime_reported=runtime,
        on_device=model_id is not None and runtime is not False,
        accelerators=tuple(accelerators),
    )
