"""One live `upcoach serve` for the operations tests: the real model, authentication on, JSON logs.

Keys are made the way an operator makes them (`upcoach keys create`) before the server starts: an admin key (what
Prometheus scrapes /metrics with) and a user key for chat.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server


@dataclass
class OpsServer:
    server: LiveServer
    admin_key: str
    user_key: str

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, headers={"x-api-key": self.admin_key}, timeout=120)

    def user(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, headers={"x-api-key": self.user_key}, timeout=120)


def create_key(data_dir: Path, user: str, role: str) -> str:
    env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "upcoach.cli", "keys", "create", "--user", user, "--role", role],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def ops_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[OpsServer]:
    tmp = tmp_path_factory.mktemp("ops")
    data_dir = data_dir_with_model(tmp, model_path)
    admin_key = create_key(data_dir, "ops", "admin")
    user_key = create_key(data_dir, "alice", "user")
    server = start_server(
        tmp, {"UPCOACH_AUTH": "on", "UPCOACH_BUILD": "test-build-42"}, extra_args=["--log-format", "json"]
    )
    try:
        yield OpsServer(server, admin_key, user_key)
    finally:
        stop_server(server)
