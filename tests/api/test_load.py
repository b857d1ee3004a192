"""A short load test with the real model against `upcoach serve`: simulated users with think time, some leaving
mid-answer, more of them than the engine has slots and waiting places. The full run (40 users, 3 minutes) is
`python -m benchmarks.loadtest`; the verdict is the same."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from benchmarks.loadtest import simulate

from tests.conftest import LiveServer, model_server


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[LiveServer]:
    # Two slots and two waiting places for ten users: the waiting room fills for real.
    env = {"UPCOACH_PARALLEL": "2", "UPCOACH_QUEUE_DEPTH": "2", "UPCOACH_RATE_LIMIT_PER_MINUTE": "100000",
           "UPCOACH_RATE_LIMIT_BURST": "1000"}  # fmt: skip
    with model_server(tmp_path_factory, model_path, "load", env) as server:
        yield server


def test_simulated_users_get_answers_or_a_clean_429_and_never_a_5xx(small_server: LiveServer) -> None:
    report = asyncio.run(simulate(small_server.base_url, users=10, duration_s=30, think_s=1.0, max_tokens=16))
    assert report.server_errors == 0, report.to_json()
    assert report.refused_without_retry_after == 0, report.to_json()
    assert report.broken_streams == [], report.to_json()
    assert report.completed > 0 and report.statuses[200] >= report.completed, report.to_json()
    assert report.requests == sum(report.statuses.values()) + len(report.broken_streams), report.to_json()
    # Afterwards every slot is free again: nothing leaked.
    local = httpx.get(small_server.base_url + "/readyz", timeout=10).json()["local"]
    assert local["running"] == 0 and local["waiting"] == 0 and local["kv_cells_reserved"] == 0, local
