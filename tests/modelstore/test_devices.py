"""The device tier rule, table-driven: every threshold on both sides, and each reason that forces low-end."""

from __future__ import annotations

import pytest

from upcoach.modelstore.catalog import CATALOG
from upcoach.modelstore.devices import (
    FLAGSHIP_MIN_RAM_MB,
    LOW_BATTERY_PERCENT,
    MID_RANGE_MIN_RAM_MB,
    DeviceQuery,
    recommend,
)

LLM = frozenset({"local-llm"})

CASES = [
    # (query, tier, model)
    (DeviceQuery(8192, "Pixel 8 Pro", 80, LLM), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(FLAGSHIP_MIN_RAM_MB, "", None, LLM), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(FLAGSHIP_MIN_RAM_MB - 1, "", None, LLM), "mid-range", "gemma3-270m"),
    (DeviceQuery(MID_RANGE_MIN_RAM_MB, "Galaxy A54", 50, LLM), "mid-range", "gemma3-270m"),
    (DeviceQuery(MID_RANGE_MIN_RAM_MB - 1, "", 50, LLM), "low-end", None),
    (DeviceQuery(1024), "low-end", None),
    # capabilities: not reported is no penalty; reported without local-llm is low-end whatever the RAM
    (DeviceQuery(12288), "flagship", "qwen2.5-0.5b-instruct"),
    (DeviceQuery(12288, capabilities=frozenset({"camera", "nfc"})), "low-end", None),
    (DeviceQuery(12288, capabilities=frozenset()), "low-end", None),
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
