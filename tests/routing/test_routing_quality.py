"""The routing rules on the labelled coaching requests of benchmarks/data/routing_requests.jsonl, routed by the engine
create_app builds (benchmarks/routing.py; the figures and their history are in docs/benchmarks.md)."""

from __future__ import annotations

import asyncio

import pytest
from benchmarks.routing import SYSTEM_PROMPTS, Routed, load, route_all


@pytest.fixture(scope="module")
def routed() -> list[Routed]:
    return asyncio.run(route_all(load()))


def test_the_set_is_labelled_with_reasons_in_six_languages() -> None:
    requests = load()
    assert len(requests) >= 300 and sum(r.split == "held" for r in requests) >= 100
    assert {r.lang for r in requests} == {"en", "de", "fr", "es", "it", "pt"}
    assert all(r.reason for r in requests) and len({r.id for r in requests}) == len(requests)
    for split in ("dev", "held"):
        labels = [r.local_ok for r in requests if r.split == split]
        assert labels.count(True) == labels.count(False)


def _shares(routed: list[Routed], split: str) -> tuple[float, float]:
    simple = [r for r in routed if r.request.split == split and r.request.local_ok]
    hard = [r for r in routed if r.request.split == split and not r.request.local_ok]
    return sum(r.target == "local" for r in simple) / len(simple), sum(r.target == "cloud" for r in hard) / len(hard)


def test_simple_requests_stay_local_and_hard_ones_go_to_the_cloud(routed: list[Routed]) -> None:
    # Before issue 20's rules: 1.00 and 0.00 on both splits. The goal is 0.90 and 0.90 on held-out requests; the
    # rules reach 0.85 on the last fresh held-out split (docs/benchmarks.md), so this guards what they reach.
    assert _shares(routed, "dev") >= (0.95, 0.95)
    local, cloud = _shares(routed, "held")
    assert local >= 0.9 and cloud >= 0.8, (local, cloud)


def test_no_system_prompt_turns_coaching_requests_into_special_category_data(routed: list[Routed]) -> None:
    # None of these requests holds data about a person; behind the instruction prompts the old guard kept them all.
    assert {r.prompt for r in routed} == set(SYSTEM_PROMPTS)
    assert [r.request.id for r in routed if r.kept_local_by_privacy] == []
