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

from tests.conftest import LiveServer, data_dir_with_model, free_port, start_server, stop_server


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
    env = {
        "UPCOACH_AUTH": "on",
        "UPCOACH_BUILD": "test-build-42",
        # A cloud endpoint nobody listens on: its breaker is on the dashboard; private requests never go there.
        "UPCOACH_CLOUD_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }
    server = start_server(tmp, env, extra_args=["--log-format", "json"])
    try:
        yield OpsServer(server, admin_key, user_key)
    finally:
        stop_server(server)


SECRET = "Quokka-Zebra-8812 my neighbour Ingrid"


@pytest.fixture(scope="session")
def served(ops_server: OpsServer) -> OpsServer:
    """One chat answered under a caller-chosen request id, one refused with a 4xx, one with a bad request id."""
    with ops_server.user() as user:
        answered = user.post(
            "/v1/chat/completions", headers={"x-request-id": "ops-test-1"},
            json={"model": "default", "messages": [{"role": "user", "content": f"Say hi to {SECRET}."}],
                  "max_tokens": 24},
        )  # fmt: skip
        assert answered.status_code == 200, answered.text
        assert answered.headers["x-request-id"] == "ops-test-1"
        refused = user.post("/v1/chat/completions", json={"messages": "not a list"})
        assert 400 <= refused.status_code < 500
        spoofed = user.get("/healthz", headers={"x-request-id": "two words; forged-line"})
        assert spoofed.headers["x-request-id"] != "two words; forged-line"
        assert len(spoofed.headers["x-request-id"]) == 32
    return ops_server
