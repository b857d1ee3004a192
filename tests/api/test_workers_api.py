"""`upcoach serve --workers 2`: real worker processes on one port, the real model in one engine process, the real
Redis; answers, shared state, and what happens when a worker or the engine dies."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server
from tests.fakes.fault_server import FaultServer
from upcoach.config import Settings
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository

# Redis databases of this module's own: breakers are keyed by backend name ("cloud"), which other suites use too,
# and the overload server must not find the breaker the first server opened.
REDIS_URL = "redis://127.0.0.1:6379/11"
OVERLOAD_REDIS_URL = "redis://127.0.0.1:6379/12"
COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
RATE_BURST = 5
KEY_NAMES = ("admin", "answers", "limit", "breaker", "kill", "restart", "chips")


@dataclass
class Cluster:
    server: LiveServer
    peer: FaultServer
    keys: dict[str, str]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


async def _create_keys(settings: Settings) -> dict[str, str]:
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        key = audit_key_from_settings(settings)
        assert key is not None
        keys = ApiKeys(ApiKeyRepository(db), AuditLog(AuditRepository(db), key))
        issued = {}
        for name in KEY_NAMES:
            issued[name] = (await keys.create(name, Role.admin if name == "admin" else Role.user)).token
        return issued
    finally:
        await db.dispose()


def flush(url: str) -> None:
    shared = redis.Redis.from_url(url)
    shared.flushdb()
    shared.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Cluster]:
    flush(REDIS_URL)
    tmp = tmp_path_factory.mktemp("workers")
    data_dir = data_dir_with_model(tmp, model_path)
    keys = asyncio.run(_create_keys(Settings(data_dir=data_dir)))
    with FaultServer() as peer:
        server = start_server(
            tmp,
            {
                "UPCOACH_AUTH": "on",
                "UPCOACH_REDIS_URL": REDIS_URL,
                "UPCOACH_THREADS": "1",
                "UPCOACH_CLOUD_BASE_URL": peer.url,
                "UPCOACH_CLOUD_API_KEY": "k",
                "UPCOACH_CLOUD_MODEL": "error-500",
                "UPCOACH_BREAKER_MIN_REQUESTS": "2",
                "UPCOACH_BREAKER_COOLDOWN_SECONDS": "600",
                "UPCOACH_RATE_LIMIT_BURST": str(RATE_BURST),
                "UPCOACH_RATE_LIMIT_PER_MINUTE": "0.01",
                # Chips are checked for who wrote them, not for speed: the shared machine may be slow.
                "UPCOACH_CHIPS_BUDGET_MS": "60000",
            },
            extra_args=["--workers", "2"],
            timeout=300,
        )
        try:
            yield Cluster(server, peer, keys)
        finally:
            stop_server(server)


def _pid_of(client: httpx.Client, headers: dict[str, str]) -> int | None:
    """The worker on this connection; None while it is not ready (its engine probe has not succeeded yet)."""
    details = client.get("/readyz", headers=headers).json()  # details (the worker) only for an admin
    return int(details["worker"]) if details["status"] == "ready" and "worker" in details else None


def _worker(client: httpx.Client) -> int:
    """The worker on this connection, ready or not (a server without a local model is never ready)."""
    return int(client.get("/readyz").json()["worker"])


def on_each_worker(cluster: Cluster, action: Callable[[httpx.Client], Any], count: int = 2) -> dict[int, Any]:
    """Run ``action`` once on each of ``count`` different workers: a client keeps one connection, and a connection
    stays with the worker that accepted it; fresh connections are opened until every worker has been met. The
    worker is read before and after the action on the same connection, so the answer surely came from it."""
    results: dict[int, Any] = {}
    for _ in range(400):
        with httpx.Client(
            base_url=cluster.server.base_url, timeout=300, limits=httpx.Limits(max_connections=1)
        ) as client:
            pid = _pid_of(client, cluster.headers("admin"))
            if pid is None:
                time.sleep(0.5)
                continue
            if pid in results:
                continue
            result = action(client)
            if _pid_of(client, cluster.headers("admin")) == pid:
                results[pid] = result
        if len(results) == count:
            return results
    raise AssertionError(f"met only workers {sorted(results)} in 400 connections")


def children(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def engine_process(server: LiveServer) -> psutil.Process:
    for child in children(server):
        with_engine = [c for c in child.net_connections(kind="unix") if c.laddr.endswith("engine.sock")]
        if with_engine:
            return child
    raise AssertionError("no engine process listening on engine.sock")


def chat(client: httpx.Client, headers: dict[str, str], *, stream: bool) -> str:
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hello in three words."}],
            "max_tokens": 6, "temperature": 0, "stream": stream}  # fmt: skip
    if not stream:
        response = client.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])
    pieces = []
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                assert '"error"' not in line, line
                pieces.extend(re.findall(r'"content":"([^"]*)"', line))
    return "".join(pieces)


def test_both_workers_answer_from_the_one_engine_process_streamed_and_not(cluster: Cluster) -> None:
    headers = cluster.headers("answers")

    def answer(client: httpx.Client) -> tuple[str, str]:
        return chat(client, headers, stream=False), chat(client, headers, stream=True)

    answers = on_each_worker(cluster, answer)
    for whole, streamed in answers.values():
        assert whole.strip() and streamed.strip()
    # One model in memory: the workers and one engine, which alone listens on the engine socket.
    engine = engine_process(cluster.server)
    assert engine.pid not in answers
    assert len({c.pid for c in children(cluster.server)} & set(answers)) == 2


def test_a_rate_limit_spent_on_one_worker_holds_on_the_other(cluster: Cluster) -> None:
    headers = cluster.headers("limit")
    spent = {"done": False}

    def spend_or_check(client: httpx.Client) -> list[httpx.Response]:
        if not spent["done"]:
            spent["done"] = True
            return [client.get("/v1/models", headers=headers) for _ in range(RATE_BURST)]
        return [client.get("/v1/models", headers=headers)]

    first, second = on_each_worker(cluster, spend_or_check).values()
    assert [r.status_code for r in first] == [200] * RATE_BURST
    assert second[0].status_code == 429 and int(second[0].headers["Retry-After"]) >= 1


def test_an_open_breaker_is_seen_by_the_other_worker(cluster: Cluster) -> None:
    headers = cluster.headers("breaker")
    body = {"messages": [{"role": "user", "content": COMPLEX}], "routingHints": {"privacyLevel": "public"},
            "maxTokens": 4, "temperature": 0}  # fmt: skip
    opened = {"done": False}

    def trip_or_check(client: httpx.Client) -> dict[str, Any]:
        if not opened["done"]:
            opened["done"] = True
            for _ in range(2):  # the cloud answers 500: two failures open the breaker (min 2 requests)
                response = client.post("/api/ai/hybrid/process", json=body, headers=headers)
                assert response.status_code == 200, response.text
            return {}
        before = len(cluster.peer.requests)
        response = client.post("/api/ai/hybrid/process", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return {"reasons": response.json()["routing"]["reasons"], "reached_cloud": len(cluster.peer.requests) - before}

    _, checked = on_each_worker(cluster, trip_or_check).values()
    assert any(reason.startswith("cloud circuit breaker open") for reason in checked["reasons"]), checked
    assert checked["reached_cloud"] == 0


def test_a_dashboard_session_opened_on_one_worker_is_valid_on_the_other(cluster: Cluster) -> None:
    cookies: dict[str, str] = {}

    def sign_in_or_use(client: httpx.Client) -> int:
        if not cookies:
            page = client.get("/dashboard/signin")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token is not None
            signed = client.post("/dashboard/signin", data={"credential": cluster.keys["admin"],
                                 "csrf_token": token.group(1)}, follow_redirects=False)  # fmt: skip
            assert signed.status_code == 303
            cookies.update(client.cookies)
            return signed.status_code
        client.cookies.update(cookies)
        return client.get("/dashboard", follow_redirects=False).status_code

    statuses = list(on_each_worker(cluster, sign_in_or_use).values())
    assert statuses == [303, 200]


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s")


def test_both_workers_get_model_written_chips_from_the_engine_process(cluster: Cluster) -> None:
    conversation = [{"role": "user", "content": "I keep procrastinating on my thesis and I feel guilty."}]

    def ask(client: httpx.Client) -> dict[str, Any]:
        response = client.post("/api/coach/suggestions", json={"messages": conversation, "count": 3},
                               headers=cluster.headers("chips"))  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    for body in on_each_worker(cluster, ask).values():
        # The grammar and the branches reached the engine's model over its socket (llm/engine_chips.py): before,
        # a worker could only fall back to the library ("the local backend cannot constrain output").
        assert body["modelLatencyMs"] is not None, body
        assert body["source"] == "model" or body["reason"] == "the model wrote no usable chip", body
        assert len(body["suggestions"]) == 3


def test_killing_a_worker_does_not_lose_the_engine(cluster: Cluster) -> None:
    engine = engine_process(cluster.server)
    before = children(cluster.server)
    victim = next(c for c in before if c.pid != engine.pid and "resource_tracker" not in " ".join(c.cmdline()))
    os.kill(victim.pid, signal.SIGKILL)
    # uvicorn's supervisor replaces the worker; the engine (and the loaded model) is untouched.
    wait_for(lambda: victim.pid not in {c.pid for c in children(cluster.server)}, 30)
    wait_for(lambda: len(children(cluster.server)) == len(before), 120)
    assert engine_process(cluster.server).pid == engine.pid
    with httpx.Client(base_url=cluster.server.base_url, timeout=300) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 120)
        assert chat(client, cluster.headers("kill"), stream=False).strip()


def test_the_supervisor_restarts_a_dead_engine(cluster: Cluster) -> None:
    engine = engine_process(cluster.server)
    os.kill(engine.pid, signal.SIGKILL)

    def replaced() -> bool:
        try:
            return engine_process(cluster.server).pid != engine.pid
        except AssertionError:
            return False

    wait_for(replaced, 180)
    # The workers' pools probe the new engine back into rotation (until then their /readyz says 503), and then
    # both answer from it again.
    answers = on_each_worker(cluster, lambda client: chat(client, cluster.headers("restart"), stream=False))
    assert all(answer.strip() for answer in answers.values())


# ---- overload through two workers ------------------------------------------------------------------------------
CAP = 3
BURST = 60


@pytest.fixture(scope="module")
def overload_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FaultServer]]:
    flush(OVERLOAD_REDIS_URL)
    with FaultServer() as peer:
        live = start_server(
            tmp_path_factory.mktemp("workers-overload"),
            {"UPCOACH_LOAD_MODEL": "false", "UPCOACH_REDIS_URL": OVERLOAD_REDIS_URL, "UPCOACH_CLOUD_BASE_URL": peer.url,
             "UPCOACH_CLOUD_API_KEY": "k", "UPCOACH_CLOUD_MODEL": "slow-first-token@1.5",
             "UPCOACH_CLOUD_MAX_INFLIGHT": str(CAP)},
            wait_for="/healthz", extra_args=["--workers", "2"], timeout=180,
        )  # fmt: skip
        try:
            yield live, peer
        finally:
            stop_server(live)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_burst_through_two_workers_gets_only_200s_and_429s(
    overload_server: tuple[LiveServer, FaultServer], stream: bool
) -> None:
    server, peer = overload_server
    peer.clear()
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    body = {"messages": [{"role": "user", "content": "How do I keep a morning routine on weekends?"}],
            "routingHints": {"privacyLevel": "public"}, "maxTokens": 16, "stream": stream}  # fmt: skip
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
        # Any socket error or timeout raises here and fails the test.
        responses = await asyncio.gather(*(client.post("/api/ai/hybrid/process", json=body) for _ in range(BURST)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    ok = statuses.count(200)
    # Each worker caps its own calls: never more than CAP per worker reach the peer at once.
    assert 1 <= ok <= BURST and len(peer.requests) == ok


def _served(text: str, route: str) -> float:
    """The responses ``route`` got, in a Prometheus text exposition (summed over status codes)."""
    pattern = rf'^upcoach_http_responses_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


def test_one_scrape_counts_the_requests_of_every_worker(overload_server: tuple[LiveServer, FaultServer]) -> None:
    server, _ = overload_server
    per_worker, answered, scrapes = 7, set(), {}
    for _ in range(400):
        with httpx.Client(base_url=server.base_url, timeout=60, limits=httpx.Limits(max_connections=1)) as client:
            pid = _worker(client)
            if pid in answered:
                continue
            for _ in range(per_worker):
                assert client.get("/v1/models").status_code == 200
            answered.add(pid)
            scrapes[pid] = client.get("/metrics").text
            assert _worker(client) == pid
        if len(answered) == 2:
            break
    assert len(answered) == 2, f"met only workers {sorted(answered)}"
    # The second worker's scrape counts the first worker's requests too; the first scraped before the second's.
    assert sorted(_served(text, "/v1/models") for text in scrapes.values()) == [per_worker, 2 * per_worker]
