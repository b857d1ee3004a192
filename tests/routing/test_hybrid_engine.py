"""The hybrid engine with the real local model in process and a cloud peer that can fail on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.fakes.fault_server import FaultServer
from upcoach.errors import LocalUnavailable
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.observability.metrics import Metrics
from upcoach.routing.breaker import BreakerConfig, CircuitBreaker, MemoryBreakerStore, RedisBreakerStore
from upcoach.routing.costs import CloudBudget, Price, PriceTable
from upcoach.routing.engine import HybridEngine, HybridRequest, Outcome
from upcoach.routing.policy import Hints, PolicyConfig

COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
SIMPLE = "How do I drink more water?"
PRICES = PriceTable({"ok": Price(1.0, 2.0)}, Price(1.0, 2.0), 0.0)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
async def local(model_path: Path) -> AsyncIterator[LlamaCppEngine]:
    # queue_depth 0: one request at a time, so "queue full" can be caused for real.
    engine = LlamaCppEngine(EngineConfig(model_path, "qwen2.5-0.5b-instruct", threads=2, queue_depth=0))
    await engine.start()
    assert engine.ready
    yield engine
    await engine.stop()


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    async def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def make_engine(
    local: LlamaCppEngine | None,
    fault: FaultServer | None,
    cloud_model: str = "ok",
    breaker: CircuitBreaker | None = None,
    first_token_timeout: float = 2.0,
    budget: float | None = None,
) -> tuple[HybridEngine, Recorder]:
    cloud = None
    if fault is not None:
        cloud = OpenAICompatBackend(
            "cloud", fault.url, cloud_model, api_key="k", first_token_timeout=first_token_timeout, total_timeout=10
        )
    recorder = Recorder()
    engine = HybridEngine(
        local=[local] if local is not None else [],
        cloud=cloud,
        cloud_breaker=breaker or (CircuitBreaker("cloud", BreakerConfig(), MemoryBreakerStore()) if cloud else None),
        cloud_model=cloud_model,
        prices=PRICES,
        budget=CloudBudget(budget),
        policy=PolicyConfig(0.5),
        metrics=Metrics(),
        record=recorder,
    )
    return engine, recorder


def request(text: str, privacy: str = "public", **hints: object) -> HybridRequest:
    return HybridRequest(
        messages=(ChatMessage("system", "You are a concise coach."), ChatMessage("user", text)),
        params=GenerationParams(max_tokens=12, temperature=0),
        hints=Hints(privacy_level=privacy, **hints),  # type: ignore[arg-type]
        request_id=f"req_{uuid.uuid4().hex}",
        user_id="u1",
    )


async def test_complex_public_goes_to_cloud_with_cost(local: LlamaCppEngine, fault: FaultServer) -> None:
    fault.clear()
    engine, recorder = make_engine(local, fault)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "cloud" and not outcome.fallback_used
    assert outcome.text.startswith("Small steady steps")
    assert outcome.cost_usd > 0 and outcome.cost_usd == pytest.approx(outcome.cloud_equivalent_usd)
    assert any("complex request" in r for r in outcome.reasons)
    assert len(fault.requests) == 1 and recorder.outcomes == [outcome]


async def test_simple_public_stays_local_for_free(local: LlamaCppEngine, fault: FaultServer) -> None:
    fault.clear()
    engine, _ = make_engine(local, fault)
    outcome = await engine.process(request(SIMPLE))
    assert outcome.processing_mode == "local" and outcome.cost_usd == 0
    assert outcome.cloud_equivalent_usd > 0  # the cost avoided
    assert fault.requests == []


@pytest.mark.parametrize("privacy", ["private", "sensitive"])
async def test_private_and_sensitive_never_reach_the_cloud(
    local: LlamaCppEngine, fault: FaultServer, privacy: str
) -> None:
    fault.clear()
    engine, _ = make_engine(local, fault)
    outcome = await engine.process(request(COMPLEX, privacy, max_latency_ms=1.0))
    assert outcome.processing_mode == "local"
    assert fault.requests == []


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("error-500", "backend_error"),
        ("error-429", "backend_rate_limited"),
        ("hang", "backend_timeout"),
        ("drop-before-first", "backend_error"),
    ],
)
async def test_cloud_failure_before_first_token_is_answered_locally(
    local: LlamaCppEngine, fault: FaultServer, mode: str, code: str
) -> None:
    engine, recorder = make_engine(local, fault, cloud_model=mode, first_token_timeout=0.8)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local" and outcome.fallback_used
    assert outcome.text.strip()
    assert any(code in r and "answered locally" in r for r in outcome.reasons), outcome.reasons
    assert outcome.cost_usd == 0
    assert recorder.outcomes[0].fallback_used


async def test_cloud_dropping_mid_answer_is_finished_locally_as_hybrid(
    local: LlamaCppEngine, fault: FaultServer
) -> None:
    engine, _ = make_engine(local, fault, cloud_model="drop-mid")
    events = [e async for e in engine.stream(request(COMPLEX))]
    outcome = events[-1].outcome
    assert outcome is not None
    assert outcome.processing_mode == "hybrid" and outcome.fallback_used
    streamed = "".join(e.text for e in events if e.kind == "text")
    assert streamed == outcome.text
    cloud_part = "Small steady steps"
    assert outcome.text.startswith(cloud_part) and len(outcome.text) > len(cloud_part) + 3
    assert outcome.backend == "cloud+local:qwen2.5-0.5b-instruct"
    assert any("finished locally" in r for r in outcome.reasons)


async def test_breaker_opens_and_stops_calling_a_failing_cloud(local: LlamaCppEngine, fault: FaultServer) -> None:
    breaker = CircuitBreaker("cloud", BreakerConfig(min_requests=2, cooldown_seconds=60), MemoryBreakerStore())
    engine, _ = make_engine(local, fault, cloud_model="error-500", breaker=breaker)
    fault.clear()
    for _ in range(2):
        await engine.process(request(COMPLEX))
    assert len(fault.requests) == 2
    outcome = await engine.process(request(COMPLEX))
    assert len(fault.requests) == 2, "an open breaker must not call the cloud"
    assert outcome.processing_mode == "local"
    assert any("breaker open" in r for r in outcome.reasons)
    assert str(await breaker.state()) == "open"


async def test_breaker_state_is_shared_through_redis(local: LlamaCppEngine, fault: FaultServer) -> None:
    prefix = f"upcoach:test:{uuid.uuid4().hex}:"
    clients = [aioredis.Redis.from_url("redis://127.0.0.1:6379/0") for _ in range(2)]
    config = BreakerConfig(min_requests=2, cooldown_seconds=60)
    try:
        breakers = [CircuitBreaker("cloud", config, RedisBreakerStore(c, prefix)) for c in clients]
        worker_a, _ = make_engine(local, fault, cloud_model="error-500", breaker=breakers[0])
        worker_b, _ = make_engine(local, fault, cloud_model="error-500", breaker=breakers[1])
        for _ in range(2):
            await worker_a.process(request(COMPLEX))
        fault.clear()
        outcome = await worker_b.process(request(COMPLEX))
        assert fault.requests == [] and any("breaker open" in r for r in outcome.reasons)
    finally:
        keys = await clients[0].keys(prefix + "*")
        if keys:
            await clients[0].delete(*keys)
        for client in clients:
            await client.aclose()


async def test_local_queue_full_spills_public_to_cloud_but_refuses_private(
    local: LlamaCppEngine, fault: FaultServer
) -> None:
    engine, _ = make_engine(local, fault)
    long_request = ChatRequest((ChatMessage("user", "Write a long story about a lighthouse."),),
                               GenerationParams(max_tokens=300))  # fmt: skip
    stream = local.stream(long_request)
    await anext(stream)  # the only slot is now taken
    try:
        spilled = await engine.process(request(SIMPLE))
        assert spilled.processing_mode == "cloud"
        assert any("queue full" in r for r in spilled.reasons)
        with pytest.raises(Exception) as caught:
            await engine.process(request(SIMPLE, "private"))
        assert getattr(caught.value, "status", None) == 429
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if local.pending == 0:
            break
        await asyncio.sleep(0.05)


async def test_local_down_public_uses_cloud_sensitive_gets_503(fault: FaultServer) -> None:
    engine, recorder = make_engine(None, fault)
    assert (await engine.process(request(SIMPLE))).processing_mode == "cloud"
    with pytest.raises(LocalUnavailable):
        await engine.process(request(SIMPLE, "sensitive"))
    assert recorder.outcomes[-1].outcome == "error" and recorder.outcomes[-1].error_code == "local_unavailable"


async def test_no_cloud_configured_means_everything_local(local: LlamaCppEngine) -> None:
    engine, _ = make_engine(local, None)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local"
    assert any("no cloud configured" in r for r in outcome.reasons)


async def test_budget_exhausted_keeps_requests_local(local: LlamaCppEngine, fault: FaultServer) -> None:
    engine, _ = make_engine(local, fault, budget=0.0)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local" and any("budget" in r for r in outcome.reasons)


async def test_metrics_count_modes_and_fallbacks(local: LlamaCppEngine, fault: FaultServer) -> None:
    engine, _ = make_engine(local, fault, cloud_model="error-500")
    await engine.process(request(COMPLEX))
    text = engine.metrics.render().decode()
    assert 'upcoach_requests_total{decision="cloud",mode="local",outcome="ok"} 1.0' in text
    assert 'upcoach_fallbacks_total{reason="backend_error",source="cloud",target="local"} 1.0' in text
    assert "upcoach_routing_decision_seconds_count 1.0" in text
