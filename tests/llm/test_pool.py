"""BackendPool over real HTTP: two fault servers stand in for two replicas (balancing, failover, recovery)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from tests.fakes.fault_server import ANSWER, FaultServer
from upcoach.errors import BackendError, Overloaded, Unavailable
from upcoach.llm.base import ChatMessage, ChatRequest, Chunk, GenerationParams
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.llm.pool import BackendPool

REQUEST = ChatRequest((ChatMessage("user", "Help me plan a calmer morning."),), GenerationParams(max_tokens=32))


@pytest.fixture(scope="module")
def replicas() -> Iterator[tuple[FaultServer, FaultServer]]:
    with FaultServer() as first, FaultServer() as second:
        yield first, second


@pytest.fixture
def a(replicas: tuple[FaultServer, FaultServer]) -> FaultServer:
    replicas[0].up()
    replicas[0].clear()
    return replicas[0]


@pytest.fixture
def b(replicas: tuple[FaultServer, FaultServer]) -> FaultServer:
    replicas[1].up()
    replicas[1].clear()
    return replicas[1]


def member(
    server: FaultServer, model: str, name: str, delay: float | None = None, max_inflight: int = 8
) -> OpenAICompatBackend:
    headers = {"x-fault-delay": str(delay)} if delay is not None else None
    return OpenAICompatBackend(
        name, server.url, model, kind="pool", first_token_timeout=2, default_headers=headers, max_inflight=max_inflight
    )


@contextlib.asynccontextmanager
async def pool_of(*members: OpenAICompatBackend, health_interval: float = 5.0) -> AsyncIterator[BackendPool]:
    pool = BackendPool("replicas", list(members), health_interval=health_interval)
    try:
        yield pool
    finally:
        await pool.aclose()


async def fault_switch(server: FaultServer, state: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(server.url.removesuffix("/v1") + f"/fault/{state}")
    assert response.json() == {"down": state == "down"}


async def wait_until(condition: Callable[[], bool]) -> None:
    """Polls: the state lives in the fault server's thread, where no asyncio.Event of ours can be set."""
    for _ in range(150):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 3 s")


def test_a_pool_needs_members() -> None:
    with pytest.raises(ValueError):
        BackendPool("empty", [])


async def test_equal_load_alternates_between_members(a: FaultServer, b: FaultServer) -> None:
    async with pool_of(member(a, "ok", "a"), member(b, "ok", "b")) as pool:
        served = []
        for _ in range(4):
            before = len(a.requests)
            assert (await pool.chat(REQUEST)).text == ANSWER
            served.append("a" if len(a.requests) > before else "b")
    assert served == ["a", "b", "a", "b"]


async def test_requests_go_to_the_member_with_fewest_outstanding(a: FaultServer, b: FaultServer) -> None:
    busy, idle = member(a, "slow-first-token", "a", delay=0.4), member(b, "slow-first-token", "b", delay=0.4)
    async with pool_of(busy, idle) as pool:
        # Two requests already in flight on the first replica (sent to it directly, as another pool might).
        held = [busy.stream(REQUEST), busy.stream(REQUEST)]
        for stream in held:
            assert await anext(stream) == Chunk()
        assert pool.info().details["outstanding"] == 2
        results = await asyncio.gather(pool.chat(REQUEST), pool.chat(REQUEST))
        for stream in held:
            await stream.aclose()
    assert [r.text for r in results] == [ANSWER, ANSWER]
    assert (len(a.requests), len(b.requests)) == (2, 2)  # both pool requests went to the idle replica


async def test_concurrent_requests_spread_by_outstanding(a: FaultServer, b: FaultServer) -> None:
    first, second = member(a, "slow-first-token", "a", delay=0.3), member(b, "slow-first-token", "b", delay=0.3)
    async with pool_of(first, second) as pool:
        await asyncio.gather(*(pool.chat(REQUEST) for _ in range(6)))
        assert pool.info().details["outstanding"] == 0
    assert (len(a.requests), len(b.requests)) == (3, 3)


async def test_a_500_fails_over_once_and_leaves_rotation(a: FaultServer, b: FaultServer) -> None:
    broken, good = member(a, "error-500", "broken"), member(b, "ok", "good")
    async with pool_of(broken, good) as pool:
        chunks = [chunk async for chunk in pool.stream(REQUEST)]
        assert chunks[0] == Chunk()
        assert "".join(c.text for c in chunks) == ANSWER
        assert chunks[-1].final is not None
        assert not pool.is_healthy(broken) and pool.is_healthy(good)
        # Out of rotation: the next requests do not even try it.
        assert (await pool.chat(REQUEST)).text == ANSWER
        assert (len(a.requests), len(b.requests)) == (1, 2)
        states = {m["name"]: (m["healthy"], m["reason"]) for m in pool.info().details["members"]}  # type: ignore[attr-defined]
        assert states["good"] == (True, "")
        assert states["broken"][0] is False and "internal error" in str(states["broken"][1])


async def test_a_replica_that_is_down_fails_over(a: FaultServer, b: FaultServer) -> None:
    await fault_switch(a, "down")
    down, up = member(a, "ok", "down"), member(b, "ok", "up")
    async with pool_of(down, up) as pool:
        assert (await pool.chat(REQUEST)).text == ANSWER
        assert not pool.is_healthy(down)
        assert (len(a.requests), len(b.requests)) == (1, 1)


async def test_a_drop_before_the_first_token_fails_over_with_one_admission(a: FaultServer, b: FaultServer) -> None:
    async with pool_of(member(a, "drop-before-first", "dropper"), member(b, "ok", "good")) as pool:
        chunks = [chunk async for chunk in pool.stream(REQUEST)]
    assert [c for c in chunks if not c.text and c.final is None] == [Chunk()]
    assert "".join(c.text for c in chunks) == ANSWER


async def test_a_drop_after_tokens_is_not_retried(a: FaultServer, b: FaultServer) -> None:
    async with pool_of(member(a, "drop-mid", "dropper"), member(b, "ok", "good")) as pool:
        with pytest.raises(BackendError) as caught:
            await pool.chat(REQUEST)
    assert caught.value.before_first_token is False
    assert len(b.requests) == 0  # the user has seen part of an answer: only the caller may decide what next


async def test_client_errors_are_not_retried_and_keep_the_member(a: FaultServer, b: FaultServer) -> None:
    small = member(a, "error-400", "small-context")
    async with pool_of(small, member(b, "ok", "good")) as pool:
        with pytest.raises(BackendError) as caught:
            await pool.chat(REQUEST)
        assert pool.is_healthy(small)
    assert caught.value.status == 502 and "maximum context length" in caught.value.message
    assert len(b.requests) == 0


async def test_only_one_retry(a: FaultServer, b: FaultServer) -> None:
    members = [member(a, "error-500", "first"), member(b, "error-500", "second"), member(b, "ok", "third")]
    async with pool_of(*members) as pool:
        with pytest.raises(BackendError) as caught:
            await pool.chat(REQUEST)
        assert [pool.is_healthy(m) for m in members] == [False, False, True]
    assert caught.value.backend == "second"
    assert [r["model"] for r in a.requests + b.requests] == ["error-500", "error-500"]


async def test_all_members_down_is_unavailable(a: FaultServer, b: FaultServer) -> None:
    a.down()
    b.down()
    async with pool_of(member(a, "ok", "a"), member(b, "ok", "b")) as pool:
        with pytest.raises(BackendError):  # both tried: the second failure surfaces
            await pool.chat(REQUEST)
        health = await pool.health()
        assert not health.ok and "a:" in health.reason and "b:" in health.reason
        started = time.perf_counter()
        with pytest.raises(Unavailable) as caught:
            await pool.chat(REQUEST)
        assert time.perf_counter() - started < 0.1  # no peer is even tried
    assert "no healthy member" in caught.value.message
    assert (len(a.requests), len(b.requests)) == (1, 1)


async def test_the_health_loop_takes_members_out_and_brings_them_back(a: FaultServer, b: FaultServer) -> None:
    first, second = member(a, "ok", "a"), member(b, "ok", "b")
    async with pool_of(first, second, health_interval=0.1) as pool:
        await pool.start()
        await fault_switch(a, "down")
        await fault_switch(b, "down")
        await wait_until(lambda: pool.info().details["healthy_members"] == 0)
        assert not (await pool.health()).ok
        with pytest.raises(Unavailable):
            await pool.chat(REQUEST)
        await fault_switch(b, "up")
        await wait_until(lambda: pool.is_healthy(second))
        assert not pool.is_healthy(first)
        assert (await pool.chat(REQUEST)).text == ANSWER
        assert (len(a.requests), len(b.requests)) == (0, 1)
        await pool.stop()
        await fault_switch(a, "up")
        await asyncio.sleep(0.3)
        assert not pool.is_healthy(first)  # stopped: nothing probes any more


async def test_info_aggregates_the_members(a: FaultServer, b: FaultServer) -> None:
    async with pool_of(member(a, "ok", "a"), member(b, "ok", "b")) as pool:
        info = pool.info()
        assert (info.name, info.kind, info.model) == ("replicas", "pool", "ok")
        assert info.details["ttft_ms_ewma"] is None
        await pool.chat(REQUEST)
        await pool.chat(REQUEST)
        details = pool.info().details
        members = details["members"]
        assert isinstance(members, list) and [m["name"] for m in members] == ["a", "b"]
        assert [m["base_url"] for m in members] == [a.url, b.url]
        expected = sum(m["ttft_ms_ewma"] for m in members) / 2
        assert details["ttft_ms_ewma"] == pytest.approx(expected)
        assert details["healthy_members"] == 2 and details["outstanding"] == 0
        assert (await pool.health()).ok


async def test_a_full_member_is_passed_over_and_a_full_pool_refuses_at_once(a: FaultServer, b: FaultServer) -> None:
    first = member(a, "slow-first-token", "a", delay=0.3, max_inflight=1)
    second = member(b, "slow-first-token", "b", delay=0.3, max_inflight=1)
    async with pool_of(first, second) as pool:
        one, two = pool.stream(REQUEST), pool.stream(REQUEST)
        assert await anext(one) == Chunk() and await anext(two) == Chunk()
        assert (first.outstanding, second.outstanding) == (1, 1)  # the second call skipped the full member
        with pytest.raises(Overloaded) as caught:
            await pool.chat(REQUEST)
        assert caught.value.retry_after is not None
        assert (len(a.requests), len(b.requests)) == (1, 1)
        assert pool.is_healthy(first) and pool.is_healthy(second)  # full is not failing
        await one.aclose()
        assert (await pool.chat(REQUEST)).text == ANSWER
        await two.aclose()


async def test_a_busy_member_whose_calls_progress_survives_a_failed_probe(a: FaultServer) -> None:
    """A single-slot server (llama_cpp.server) does not answer /models while it generates: not dead, busy."""
    busy = member(a, "slow-stream", "a", delay=0.02)
    async with pool_of(busy) as pool:
        async with contextlib.aclosing(pool.stream(REQUEST)) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    break
            await fault_switch(a, "down")
            await pool.check()
            assert pool.is_healthy(busy)
            async for chunk in chunks:
                if chunk.final is not None:
                    break
        assert busy.outstanding == 0
        await pool.check()  # nothing in flight any more: the failed probe counts
        assert not pool.is_healthy(busy)


async def test_a_member_whose_calls_hear_nothing_is_taken_out_by_a_failed_probe(a: FaultServer) -> None:
    stuck = member(a, "hang", "a")
    async with pool_of(stuck) as pool:
        call = asyncio.create_task(pool.chat(REQUEST))
        await wait_until(lambda: stuck.outstanding == 1)
        await fault_switch(a, "down")
        await pool.check()
        assert not pool.is_healthy(stuck)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
