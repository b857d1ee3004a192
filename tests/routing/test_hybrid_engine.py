"""The hybrid engine as create_app wires it (routing/factory.py: guard, redaction, canary, privacy settings), with
the real local model in process and a cloud peer that can fail on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.fakes.fault_server import FaultServer
from tests.wiring import Recorder, Wiring, wiring
from upcoach.errors import LocalUnavailable
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import EngineConfig, LlamaCppEngine
from upcoach.routing.breaker import BreakerStore, RedisBreakerStore
from upcoach.routing.engine import HybridEngine, HybridRequest
from upcoach.routing.policy import Hints

COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
SIMPLE = "How do I drink more water?"


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
async def local(model_path: Path) -> AsyncIterator[LlamaCppEngine]:
    # One sequence slot and queue_depth 0: one request at a time, so "queue full" can be caused for real.
    engine = LlamaCppEngine(EngineConfig(model_path, "qwen2.5-0.5b-instruct", threads=2, queue_depth=0, parallel=1))
    await engine.start()
    assert engine.ready
    yield engine
    await engine.stop()


@pytest.fixture(scope="module")
async def wired(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Wiring]:
    async with wiring(tmp_path_factory.mktemp("engine")) as wired:
        yield wired


def make_engine(
    wired: Wiring,
    local: LlamaCppEngine | None,
    fault: FaultServer | None,
    cloud_model: str = "ok",
    store: BreakerStore | None = None,
    first_token_timeout: float = 2.0,
    budget: float | None = None,
    **settings: object,
) -> tuple[HybridEngine, Recorder]:
    """The engine as create_app builds it (guard, redaction, canary, privacy settings), with these peers."""
    cloud = {"cloud_base_url": fault.url, "cloud_api_key": "k"} if fault is not None else {}
    return wired.engine(
        [local] if local is not None else [], store=store, cloud_model=cloud_model, **cloud,
        cloud_first_token_timeout=first_token_timeout, cloud_total_timeout=10, cloud_budget_usd_per_day=budget,
        prices={"ok": {"input": 1.0, "output": 2.0}}, default_cloud_price={"input": 1.0, "output": 2.0},
        local_cost_per_1m_tokens=0.0, complexity_threshold=0.5, **settings,
    )  # fmt: skip


def request(text: str, privacy: str = "public", **hints: object) -> HybridRequest:
    return HybridRequest(
        messages=(ChatMessage("system", "You are a concise coach."), ChatMessage("user", text)),
        params=GenerationParams(max_tokens=12, temperature=0),
        hints=Hints(privacy_level=privacy, **hints),  # type: ignore[arg-type]
        request_id=f"req_{uuid.uuid4().hex}",
        user_id="u1",
    )


async def test_complex_public_goes_to_cloud_with_cost(wired: Wiring, local: LlamaCppEngine, fault: FaultServer) -> None:
    fault.clear()
    engine, recorder = make_engine(wired, local, fault)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "cloud" and not outcome.fallback_used
    assert outcome.text.startswith("Small steady steps")
    assert outcome.cost_usd > 0 and outcome.cost_usd == pytest.approx(outcome.cloud_equivalent_usd)
    assert any("complex request" in r for r in outcome.reasons)
    assert len(fault.requests) == 1 and recorder.outcomes == [outcome]


async def test_simple_public_stays_local_for_free(wired: Wiring, local: LlamaCppEngine, fault: FaultServer) -> None:
    fault.clear()
    engine, _ = make_engine(wired, local, fault)
    outcome = await engine.process(request(SIMPLE))
    assert outcome.processing_mode == "local" and outcome.cost_usd == 0
    assert outcome.cloud_equivalent_usd > 0  # the cost avoided
    assert fault.requests == []


async def test_sensitive_never_reaches_the_cloud_and_private_only_redacted(
    wired: Wiring, local: LlamaCppEngine, fault: FaultServer
) -> None:
    fault.clear()
    engine, _ = make_engine(wired, local, fault)
    outcome = await engine.process(request(COMPLEX, "sensitive", max_latency_ms=1.0))
    assert outcome.processing_mode == "local"
    assert fault.requests == []
    # What ships redacts private requests for the cloud (the old hand-built engine kept them local, which
    # production never did): the peer sees placeholders, never the values.
    personal = f"My manager Sarah Connor (sarah.connor@example.com) asked me this. {COMPLEX}"
    outcome = await engine.process(request(personal, "private"))
    assert outcome.processing_mode == "hybrid" and outcome.redactions == {"PERSON": 1, "EMAIL": 1}
    seen = str(fault.requests)
    assert len(fault.requests) == 1 and "[EMAIL_1]" in seen
    assert "Sarah" not in seen and "Connor" not in seen and "sarah.connor@example.com" not in seen


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
    wired: Wiring, local: LlamaCppEngine, fault: FaultServer, mode: str, code: str
) -> None:
    engine, recorder = make_engine(wired, local, fault, cloud_model=mode, first_token_timeout=0.8)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local" and outcome.fallback_used
    assert outcome.text.strip()
    assert any(code in r and "answered locally" in r for r in outcome.reasons), outcome.reasons
    assert outcome.cost_usd == 0
    assert recorder.outcomes[0].fallback_used


async def test_cloud_dropping_mid_answer_is_finished_locally_as_hybrid(
    wired: Wiring, local: LlamaCppEngine, fault: FaultServer
) -> None:
    engine, _ = make_engine(wired, local, fault, cloud_model="drop-mid")
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


async def test_breaker_opens_and_stops_calling_a_failing_cloud(
    wired: Wiring, local: LlamaCppEngine, fault: FaultServer
) -> None:
    engine, _ = make_engine(
        wired, local, fault, cloud_model="error-500", breaker_min_requests=2, breaker_cooldown_seconds=60
    )
    fault.clear()
    for _ in range(2):
        await engine.process(request(COMPLEX))
    assert len(fault.requests) == 2
    outcome = await engine.process(request(COMPLEX))
    assert len(fault.requests) == 2, "an open breaker must not call the cloud"
    assert outcome.processing_mode == "local"
    assert any("breaker open" in r for r in outcome.reasons)
    assert engine.cloud_breaker is not None and str(await engine.cloud_breaker.state()) == "open"


async def test_breaker_state_is_shared_through_redis(wired: Wiring, local: LlamaCppEngine, fault: FaultServer) -> None:
    prefix = f"upcoach:test:{uuid.uuid4().hex}:"
    clients = [aioredis.Redis.from_url("redis://127.0.0.1:6379/0") for _ in range(2)]
    breaker = {"breaker_min_requests": 2, "breaker_cooldown_seconds": 60}
    try:
        stores = [RedisBreakerStore(c, prefix) for c in clients]
        worker_a, _ = make_engine(wired, local, fault, cloud_model="error-500", store=stores[0], **breaker)
        worker_b, _ = make_engine(wired, local, fault, cloud_model="error-500", store=stores[1], **breaker)
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


async def test_local_queue_full_spills_public_and_redacted_private_to_cloud_but_refuses_sensitive(
    wired: Wiring, local: LlamaCppEngine, fault: FaultServer
) -> None:
    engine, _ = make_engine(wired, local, fault)
    long_request = ChatRequest((ChatMessage("user", "Write a long story about a lighthouse."),),
                               GenerationParams(max_tokens=300))  # fmt: skip
    stream = local.stream(long_request)
    await anext(stream)  # the only slot is now taken
    try:
        spilled = await engine.process(request(SIMPLE))
        assert spilled.processing_mode == "cloud"
        assert any("queue full" in r for r in spilled.reasons)
        private = await engine.process(request(SIMPLE, "private"))
        assert private.processing_mode == "hybrid"  # the cloud, redacted: what ships (never kept local)
        with pytest.raises(Exception) as caught:
            await engine.process(request(SIMPLE, "sensitive"))
        assert getattr(caught.value, "status", None) == 429
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    for _ in range(100):
        if local.pending == 0:
            break
        await asyncio.sleep(0.05)


async def test_local_down_public_uses_cloud_sensitive_gets_503(wired: Wiring, fault: FaultServer) -> None:
    engine, recorder = make_engine(wired, None, fault)
    assert (await engine.process(request(SIMPLE))).processing_mode == "cloud"
    with pytest.raises(LocalUnavailable):
        await engine.process(request(SIMPLE, "sensitive"))
    assert recorder.outcomes[-1].outcome == "error" and recorder.outcomes[-1].error_code == "local_unavailable"


async def test_no_cloud_configured_means_everything_local(wired: Wiring, local: LlamaCppEngine) -> None:
    engine, _ = make_engine(wired, local, None)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local"
    assert any("no cloud configured" in r for r in outcome.reasons)


async def test_budget_exhausted_keeps_requests_local(wired: Wiring, local: LlamaCppEngine, fault: FaultServer) -> None:
    engine, _ = make_engine(wired, local, fault, budget=0.0)
    outcome = await engine.process(request(COMPLEX))
    assert outcome.processing_mode == "local" and any("budget" in r for r in outcome.reasons)


async def test_metrics_count_modes_and_fallbacks(wired: Wiring, local: LlamaCppEngine, fault: FaultServer) -> None:
    engine, _ = make_engine(wired, local, fault, cloud_model="error-500")
    await engine.process(request(COMPLEX))
    text = engine.metrics.render().decode()
    assert 'upcoach_requests_total{decision="cloud",mode="local",outcome="ok"} 1.0' in text
    assert 'upcoach_fallbacks_total{reason="backend_error",source="cloud",target="local"} 1.0' in text
    assert "upcoach_routing_decision_seconds_count 1.0" in text
