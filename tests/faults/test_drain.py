"""The drain in process: /readyz turns 503 the moment shutdown begins, and once the grace has passed a request that
has not answered gets a 503 ``shutting_down`` with Retry-After (shutdown.py). The app is the app's own factory with
a FaultServer pool as its local side; the subprocess tests (test_shutdown.py) send the real signal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "One tip for sleeping better?"}]}


def _client(tmp: Path, peer: FaultServer, grace: float) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp, load_model=False, auth="off", redis_url=None, pool_urls=[peer.url],
                        pool_role="local", pool_model="ok", shutdown_grace=grace)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def peer() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def test_readyz_turns_503_at_the_first_signal_while_requests_still_answer(tmp_path: Path, peer: FaultServer) -> None:
    for client in _client(tmp_path, peer, grace=600):
        assert client.get("/readyz").status_code == 200
        client.portal.call(client.app.state.drain.begin)  # type: ignore[union-attr, attr-defined]
        assert client.get("/readyz").status_code == 503
        # Within the grace a request on an open connection is still served.
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_after_the_grace_an_unanswered_request_is_a_503_with_retry_after(tmp_path: Path, peer: FaultServer) -> None:
    for client in _client(tmp_path, peer, grace=0):
        client.portal.call(client.app.state.drain.begin)  # type: ignore[union-attr, attr-defined]
        response = client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        assert int(response.headers["retry-after"]) >= 1
