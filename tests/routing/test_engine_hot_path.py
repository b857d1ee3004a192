"""The engine's per-request costs that grow with load or with the answer: the leak check on a streamed answer is
linear in it, and our own in-flight limit refuses at once without counting against the cloud's breaker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fault_server import SLOW_STREAM_WORDS, FaultServer
from tests.security.test_canary_stream import NormalizeCounter
from tests.wiring import wiring
from upcoach.errors import Overloaded
from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.routing.breaker import BreakerState
from upcoach.routing.engine import HybridRequest
from upcoach.routing.policy import Hints

SYSTEM = "You are a concise, kind coach. Keep every answer short and concrete, with one small first step."


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def request(text: str = "How do I keep a morning routine going on weekends?") -> HybridRequest:
    return HybridRequest(
        messages=(ChatMessage("system", SYSTEM), ChatMessage("user", text)),
        params=GenerationParams(max_tokens=200),
        hints=Hints(privacy_level="public"),
        request_id=f"req_{uuid.uuid4().hex}",
    )


async def test_the_leak_check_on_a_streamed_answer_is_linear_in_it(
    fault: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    counter = NormalizeCounter(monkeypatch)
    async with wiring(tmp_path) as wired:
        engine, _ = wired.engine([], cloud_base_url=fault.url, cloud_model="slow-stream@0", cloud_total_timeout=30)
        pieces = [event.text async for event in engine.stream(request()) if event.kind == "text"]
    answer = "".join(pieces)
    assert len(pieces) == SLOW_STREAM_WORDS and answer.startswith("word0 word1")
    # Every character of the answer (and the system prompt, once) is normalised a bounded number of times; checking
    # the whole answer again at each piece, as before, normalised ~50 times the answer here.
    assert counter.characters <= 3 * len(answer) + 2 * len(SYSTEM) + 100


async def test_over_the_in_flight_limit_is_a_fast_429_that_does_not_trip_the_breaker(
    fault: FaultServer, tmp_path: Path
) -> None:
    async with wiring(tmp_path) as wired:
        engine, recorder = wired.engine(
            [], cloud_base_url=fault.url, cloud_model="slow-first-token@0.3", cloud_max_inflight=1,
            breaker_min_requests=1, breaker_failure_rate=0.1,
        )  # fmt: skip
        breaker = engine.cloud_breaker
        assert breaker is not None
        held = engine.stream(request())
        try:
            assert (await anext(held)).kind == "admitted"
            for _ in range(5):
                with pytest.raises(Overloaded) as caught:
                    await engine.process(request())
                assert caught.value.status == 429 and caught.value.retry_after is not None
            assert await breaker.state() == BreakerState.CLOSED
            assert [o.error_code for o in recorder.outcomes] == ["queue_full"] * 5
            rest = [event async for event in held]
            assert rest[-1].outcome is not None and rest[-1].outcome.outcome == "ok"
        finally:
            await held.aclose()
