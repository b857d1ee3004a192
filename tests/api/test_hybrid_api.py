"""POST /api/ai/hybrid/process and friends over HTTP: a live server whose "cloud" is a real
`python -m llama_cpp.server` on loopback, with PostgreSQL for records and Redis for shared state."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server
from tests.fakes.fault_server import FaultServer

COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
SIMPLE = "How do I drink more water?"
SECRET_MARKER = "zebra-marmalade-4471"


async def _admin(sql: str) -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    name = f"upcoach_api_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def hybrid_server(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, llama_cpp_peer: str, pg_url: str
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("hybrid")
    data_dir_with_model(tmp, model_path)
    server = start_server(tmp, {
        "UPCOACH_CLOUD_BASE_URL": llama_cpp_peer,
        "UPCOACH_CLOUD_MODEL": "gpt-4o-mini",
        "UPCOACH_CLOUD_API_KEY": "test-key",
        "UPCOACH_CLOUD_FIRST_TOKEN_TIMEOUT": "60",
        "UPCOACH_DATABASE_URL": pg_url,
        "UPCOACH_REDIS_URL": "redis://127.0.0.1:6379/0",
    })  # fmt: skip
    yield server
    stop_server(server)


def process(server: LiveServer, content: str, privacy: str = "public", **extra: object) -> httpx.Response:
    body = {
        "messages": [{"role": "system", "content": "You are a concise coach."}, {"role": "user", "content": content}],
        "routingHints": {"privacyLevel": privacy},
        "maxTokens": 12,
        "temperature": 0,
        **extra,
    }
    return httpx.post(server.base_url + "/api/ai/hybrid/process", json=body, timeout=120,
                      headers={"x-user-id": "user-42"})  # fmt: skip


def test_complex_public_request_is_answered_by_the_cloud(hybrid_server: LiveServer) -> None:
    response = process(hybrid_server, COMPLEX)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["processingMode"] == "cloud", body
    assert body["response"]["role"] == "assistant" and body["response"]["content"].strip()
    assert body["routing"]["backend"] == "cloud" and body["routing"]["fallbackUsed"] is False
    assert any("complex request" in r for r in body["routing"]["reasons"])
    assert body["metrics"]["costsIncurred"] > 0 and body["metrics"]["tokensGenerated"] > 0
    assert body["metrics"]["latency"] > 0 and body["requestId"].startswith("req_")


def test_sensitive_and_simple_requests_stay_local(hybrid_server: LiveServer) -> None:
    sensitive = process(hybrid_server, COMPLEX, privacy="sensitive").json()
    assert sensitive["processingMode"] == "local" and sensitive["metrics"]["costsIncurred"] == 0
    assert "sensitive" in sensitive["routing"]["reasons"][0]
    simple = process(hybrid_server, SIMPLE).json()
    assert simple["processingMode"] == "local"
    assert simple["metrics"]["costAvoided"] > 0


def test_streaming_sends_tokens_then_one_final_event(hybrid_server: LiveServer) -> None:
    body = {"messages": [{"role": "user", "content": SIMPLE}], "routingHints": {"privacyLevel": "private"},
            "maxTokens": 10, "stream": True}  # fmt: skip
    events: list[tuple[str, dict[str, object]]] = []
    with httpx.stream("POST", hybrid_server.base_url + "/api/ai/hybrid/process", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1 and "token" in kinds
    final = events[-1][1]
    streamed = "".join(str(data["content"]) for kind, data in events if kind == "token")
    assert final["response"]["content"] == streamed  # type: ignore[index]
    assert final["processingMode"] == "local" and final["metrics"]["tokensGenerated"] > 0  # type: ignore[index]


def test_route_returns_the_decision_alone(hybrid_server: LiveServer) -> None:
    body = {
        "messages": [{"role": "user", "content": SIMPLE}],
        "routingHints": {"privacyLevel": "private", "preferLocal": True},
        "deviceProfile": {"model": "Pixel 8", "capabilities": ["local-llm"], "batteryLevel": 12},
    }
    decision = httpx.post(hybrid_server.base_url + "/api/ai/hybrid/route", json=body).json()
    assert decision["decision"] == "local" and decision["runOnDevice"] is False
    assert "battery" in decision["deviceReasons"][0]
    body["deviceProfile"]["batteryLevel"] = 80  # type: ignore[index]
    assert httpx.post(hybrid_server.base_url + "/api/ai/hybrid/route", json=body).json()["runOnDevice"] is True
    body["messages"] = [{"role": "user", "content": COMPLEX}]
    body["routingHints"] = {"privacyLevel": "public"}
    assert httpx.post(hybrid_server.base_url + "/api/ai/hybrid/route", json=body).json()["decision"] == "cloud"


def test_openai_auto_model_goes_through_the_engine(hybrid_server: LiveServer) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=hybrid_server.v1, api_key="unused", max_retries=0, timeout=120)
    before = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["byMode"].get("cloud", 0)
    result = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": COMPLEX}], max_tokens=8,
        extra_headers={"X-Privacy-Level": "public"},
    )  # fmt: skip
    assert result.choices[0].message.content
    after = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["byMode"].get("cloud", 0)
    assert after == before + 1
    # Without a privacy header the default is private: the cloud may see it only redacted, which is "hybrid".
    hybrid_before = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["byMode"].get("hybrid", 0)
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": COMPLEX}], max_tokens=4)
    by_mode = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["byMode"]
    assert by_mode.get("cloud", 0) == after and by_mode.get("hybrid", 0) == hybrid_before + 1


def test_usage_summary_and_records_hold_no_message_text(hybrid_server: LiveServer, pg_url: str) -> None:
    process(hybrid_server, f"My code word is {SECRET_MARKER}. How do I focus?", privacy="private")
    summary = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()
    assert summary["total"] >= 3
    assert 0 < summary["localShare"] < 1
    assert summary["costIncurredUsd"] > 0 and summary["costAvoidedUsd"] > 0
    mine = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary", params={"user": "user-42"}).json()
    assert 0 < mine["total"] <= summary["total"]

    async def dump() -> str:
        engine = create_async_engine(pg_url.replace("postgresql://", "postgresql+asyncpg://"))
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM request_records"))).all()
        await engine.dispose()
        return "\n".join(str(tuple(row)) for row in rows)

    stored = asyncio.run(asyncio.wait_for(dump(), 30))
    assert "user-42" in stored and "cloud" in stored
    assert SECRET_MARKER not in stored and "drink more water" not in stored


def test_metrics_endpoint_exposes_routing_figures(hybrid_server: LiveServer) -> None:
    metrics = httpx.get(hybrid_server.base_url + "/metrics").text
    assert 'upcoach_requests_total{decision="cloud",mode="cloud",outcome="ok"}' in metrics
    assert "upcoach_first_token_seconds_bucket" in metrics
    assert "upcoach_cost_usd_total" in metrics and "upcoach_breaker_state" in metrics
    assert "upcoach_local_queue_depth" in metrics


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x" * 40_000}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi"}], "routingHints": {"privacyLevel": "secret"}},
         "routingHints.privacyLevel"),
        ({"messages": [{"role": "user", "content": "hi"}], "routingHints": {"maxLatency": -5}},
         "routingHints.maxLatency"),
        ({"messages": [{"role": "user", "content": "hi"}], "routingHints": {"maxLatency": 1e12}},
         "routingHints.maxLatency"),
        ({"messages": [{"role": "user", "content": "hi"}], "deviceProfile": {"batteryLevel": 140}},
         "deviceProfile.batteryLevel"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(hybrid_server: LiveServer, body: dict[str, object], param: str) -> None:
    before = httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["total"]
    response = httpx.post(hybrid_server.base_url + "/api/ai/hybrid/process", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert httpx.get(hybrid_server.base_url + "/api/ai/usage/summary").json()["total"] == before


def test_oversized_body_is_413(hybrid_server: LiveServer) -> None:
    response = httpx.post(hybrid_server.base_url + "/api/ai/hybrid/process",
                          json={"messages": [{"role": "user", "content": "y" * 2_000_000}]})  # fmt: skip
    assert response.status_code == 413
    assert httpx.get(hybrid_server.base_url + "/healthz").status_code == 200


@pytest.fixture(scope="module")
def failing_cloud_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[LiveServer]:
    with FaultServer() as fault:
        tmp = tmp_path_factory.mktemp("failing-cloud")
        data_dir_with_model(tmp, model_path)
        server = start_server(tmp, {"UPCOACH_CLOUD_BASE_URL": fault.url, "UPCOACH_CLOUD_MODEL": "error-500",
                                    "UPCOACH_BREAKER_MIN_REQUESTS": "2", "UPCOACH_BREAKER_WINDOW_SECONDS": "600",
                                    "UPCOACH_BREAKER_COOLDOWN_SECONDS": "600"})  # fmt: skip
        yield server
        stop_server(server)


def test_failing_cloud_falls_back_within_the_request_then_breaker_opens(failing_cloud_server: LiveServer) -> None:
    first = process(failing_cloud_server, COMPLEX).json()
    assert first["processingMode"] == "local" and first["routing"]["fallbackUsed"] is True
    assert any("backend_error" in r for r in first["routing"]["reasons"])
    process(failing_cloud_server, COMPLEX)
    third = process(failing_cloud_server, COMPLEX).json()
    assert any("breaker open" in r for r in third["routing"]["reasons"]), third
    metrics = httpx.get(failing_cloud_server.base_url + "/metrics").text
    assert 'upcoach_breaker_state{backend="cloud"} 2.0' in metrics
    assert 'upcoach_fallbacks_total{reason="backend_error",source="cloud",target="local"} 2.0' in metrics


def test_self_hosted_pool_serves_as_the_local_side(
    tmp_path_factory: pytest.TempPathFactory, llama_cpp_peer: str
) -> None:
    """No model in process: a pool of OpenAI-compatible servers (here a real llama_cpp.server) is "local"."""
    tmp = tmp_path_factory.mktemp("pool-local")
    server = start_server(tmp, {"UPCOACH_POOL_URLS": llama_cpp_peer, "UPCOACH_POOL_ROLE": "local"})
    try:
        body = process(server, COMPLEX, privacy="sensitive").json()
        assert body["processingMode"] == "local" and body["routing"]["backend"] == "pool"
        assert body["response"]["content"].strip()
        assert httpx.get(server.base_url + "/readyz").json()["status"] == "ready"
    finally:
        stop_server(server)
