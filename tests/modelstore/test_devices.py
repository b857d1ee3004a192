"""The device tier rule, table-driven: every threshold on both sides, and each reason that forces low-end."""

from __future__ import annotations

import pytest

from upcoach.modelstore.catalog import CATALOG
from upcoach.modelstore.devices import (
    FLAGSHIP_MIN_RAM_MB,
    LOW_BATTERY_PERCENT,
    MID_RANGE_MIN_RAM_MB,
    Capability,
    DeviceQuery,
    parse_capabilities,
    recommend,
)

LLM = frozenset({"local-llm", "npu"})
CPU_ONLY = frozenset({"local-llm"})

CASES = [
    # (query, tier, model)
    (DeviceQuery(8192, "Pixel 8 Pro", 80, LLM), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(FLAGSHIP_MIN_RAM_MB, "", None, LLM), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(FLAGSHIP_MIN_RAM_MB - 1, "", None, LLM), "mid-range", "gemma3-270m"),
    (DeviceQuery(MID_RANGE_MIN_RAM_MB, "Galaxy A54", 50, LLM), "mid-range", "gemma3-270m"),
    (DeviceQuery(MID_RANGE_MIN_RAM_MB - 1, "", 50, LLM), "low-end", None),
    (DeviceQuery(1024), "low-end", None),
    # capabilities: not reported is no penalty; the runtime (local-llm) does not change what the hardware could run
    (DeviceQuery(12288), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(12288, capabilities=frozenset({"npu"})), "flagship", "qwen2.5-0.5b-instruct"),
    # reported without any accelerator: the CPU runs the small model, whatever the RAM
    (DeviceQuery(12288, capabilities=frozenset()), "mid-range", "gemma3-270m"),
    (DeviceQuery(12288, capabilities=CPU_ONLY), "mid-range", "gemma3-270m"),
    (DeviceQuery(4096, capabilities=CPU_ONLY), "mid-range", "gemma3-270m"),
    # battery: below the threshold spares the phone; at the threshold it does not
    (DeviceQuery(12288, battery_level=LOW_BATTERY_PERCENT - 1, capabilities=LLM), "low-end", None),
    (DeviceQuery(12288, battery_level=LOW_BATTERY_PERCENT, capabilities=LLM), "flagship", "qwen2.5-0.5b-instruct"),
    # known low-end models, matched case- and space-insensitively, model variants included
    (DeviceQuery(6144, "iPhone 8", 90, LLM), "low-end", None),
    (DeviceQuery(6144, "  galaxy   A10  ", 90, LLM), "low-end", None),
    (DeviceQuery(6144, "iPhone SE (2nd generation)", 90, LLM), "low-end", None),
    (DeviceQuery(6144, "iPhone 15", 90, LLM), "flagship", "qwen2.5-0.5b-instruct"),
    # RAM unknown: the smallest on-device model
    (DeviceQuery(None, "", 90, LLM), "mid-range", "gemma3-270m"),
]


@pytest.mark.parametrize(("query", "tier", "model"), CASES)
def test_tiers(query: DeviceQuery, tier: str, model: str | None) -> None:
    result = recommend(query)
    assert (result.tier, result.model_id) == (tier, model)
    assert result.reasons and all(isinstance(r, str) and r for r in result.reasons)
    if model is None:
        assert result.size_bytes is None and result.sha256 is None
    else:
        assert result.size_bytes == CATALOG[model].size and result.sha256 == CATALOG[model].sha256


def test_reasons_name_the_deciding_value() -> None:
    assert "5000 MB" in recommend(DeviceQuery(5000, capabilities=LLM)).reasons[0]
    assert "12%" in recommend(DeviceQuery(8000, battery_level=12, capabilities=LLM)).reasons[0]
    assert "iPhone 7" in recommend(DeviceQuery(8000, "iPhone 7")).reasons[0]


def test_eight_gigabyte_npu_phone_without_the_runtime_is_not_low_end() -> None:
    """The regression from issue 19: 8 GB and an NPU, the app not (yet) shipping the runtime, was told "low-end"."""
    result = recommend(DeviceQuery(8192, "Pixel 8", 80, frozenset({"npu"})))
    assert (result.tier, result.model_id) == ("flagship", "qwen2.5-0.5b-instruct")
    assert result.runtime_reported is False and result.on_device is False
    assert result.accelerators == ("npu",)
    assert any("local-llm" in reason for reason in result.reasons)
    with_runtime = recommend(DeviceQuery(8192, "Pixel 8", 80, frozenset({"npu", "local-llm"})))
    assert with_runtime.runtime_reported is True and with_runtime.on_device is True


def test_runtime_not_reported_is_unknown_not_false() -> None:
    result = recommend(DeviceQuery(8192))
    assert result.runtime_reported is None and result.on_device is True
    assert recommend(DeviceQuery(1024, capabilities=LLM)).on_device is False


@pytest.mark.parametrize(
    ("wire", "parsed"),
    [
        (["local-llm", " NPU "], {Capability.local_llm, Capability.npu}),
        (["local_llm", "llm", ""], {Capability.local_llm}),
        (["neural-engine", "coreml", "metal"], {Capability.neural_engine, Capability.coreml, Capability.metal}),
        ([], set()),
    ],
)
def test_capabilities_parse(wire: list[str], parsed: set[Capability]) -> None:
    assert parse_capabilities(wire) == parsed


def test_unknown_capability_is_named() -> None:
    with pytest.raises(ValueError, match="'camera'"):
        parse_capabilities(["npu", "camera"])
