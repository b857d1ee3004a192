"""Overload: with in-flight cloud calls capped, a burst far above capacity gets only 200s and fast 429s with
Retry-After; no 5xx, no timeouts, no socket errors. A real `upcoach serve` and a real HTTP peer on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server
from tests.fakes.fault_server import ANSWER, FaultServer

CAP = 3
BURST = 60
DELAY_S = 1.5  # the peer's time to first token: long enough that the burst finds every slot taken
COACHING = (
    "My weekday morning routine falls apart every weekend. How do I keep it going without it feeling like a chore?"
)


@pytest.fixture(scope="module")
def peer() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def server(peer: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(
        Path(tmp_path_factory.mktemp("overload")),
        {
            "UPCOACH_LOAD_MODEL": "false",
            "UPCOACH_CLOUD_BASE_URL": peer.url,
            "UPCOACH_CLOUD_API_KEY": "k",
            "UPCOACH_CLOUD_MODEL": f"slow-first-token@{DELAY_S}",
            "UPCOACH_CLOUD_MAX_INFLIGHT": str(CAP),
        },
        wait_for="/healthz",
    )
    try:
        yield live
    finally:
        stop_server(live)


BODIES = {
    "/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": COACHING}], "max_tokens": 32},
    "/api/ai/hybrid/process": {
        "messages": [{"role": "user", "content": COACHING}],
        "routingHints": {"privacyLevel": "public"},
        "maxTokens": 32,
    },
}


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_burst_above_capacity_gets_only_200s_and_429s(
    server: LiveServer, peer: FaultServer, path: str, stream: bool
) -> None:
    peer.clear()
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:

        async def one() -> httpx.Response:
            return await client.post(
                path, json={**BODIES[path], "stream": stream}, headers={"X-Privacy-Level": "public"}
            )

        # Any socket error or timeout raises here and fails the test.
        responses = await asyncio.gather(*(one() for _ in range(BURST)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) >= 1 and len(refused) >= BURST // 2  # far above capacity: most are refused
    assert len(peer.requests) == len(ok) <= BURST  # a refused call never reached the peer
    for response in ok:  # the whole answer (streamed: word by word, and no error event after the 200)
        assert (ANSWER.split()[-1] if stream else ANSWER) in response.text and '"error"' not in response.text
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "queue_full"


async def test_after_the_burst_the_gateway_answers_again(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        body = BODIES["/v1/chat/completions"]
        response = await client.post("/v1/chat/completions", json=body, headers={"X-Privacy-Level": "public"})
    assert response.status_code == 200 and ANSWER in response.text
