"""OpenAICompatBackend against our fault server (every failure mode, on real HTTP) and a real llama_cpp.server."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import COACH_SYSTEM_PROMPT, free_port
from tests.fakes.fault_server import ANSWER, CONTEXT_ERROR, FaultServer, answer_pieces, prompt_tokens
from upcoach.errors import BackendError, BackendRateLimited, BackendTimeout, Overloaded
from upcoach.llm.base import ChatMessage, ChatRequest, Chunk, GenerationParams
from upcoach.llm.openai_compat import OpenAICompatBackend, is_peer_failure

MESSAGES = (
    ChatMessage("system", "You are a calm coach."),
    ChatMessage("user", "How do I start running again after a long break?"),
)
REQUEST = ChatRequest(MESSAGES, GenerationParams(max_tokens=64, temperature=0.3, top_p=0.9, stop=("###",), seed=7))


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server


@pytest.fixture(autouse=True)
def fresh(server: FaultServer) -> None:
    server.up()
    server.clear()


@contextlib.asynccontextmanager
async def backend(url: str, model: str, **kwargs: Any) -> AsyncIterator[OpenAICompatBackend]:
    instance = OpenAICompatBackend(f"fault-{model}", url, model, **kwargs)
    try:
        yield instance
    finally:
        await instance.aclose()


async def collect(chunks: AsyncIterator[Chunk], into: list[Chunk]) -> None:
    async for chunk in chunks:
        into.append(chunk)


# ---- the happy path ------------------------------------------------------------------------------------------
async def test_stream_is_admission_then_text_then_one_final(server: FaultServer) -> None:
    async with backend(server.url, "ok") as ok:
        chunks = [chunk async for chunk in ok.stream(REQUEST)]
        assert chunks[0] == Chunk()
        assert [c.text for c in chunks[1:-1]] == answer_pieces()
        assert [c.final is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
        final = chunks[-1].final
        assert final is not None
        assert final.finish_reason == "stop"
        assert final.model == "ok"
        assert final.usage.prompt_tokens == prompt_tokens([{"content": m.content} for m in MESSAGES])
        assert final.usage.completion_tokens == len(answer_pieces())
        assert final.first_token_ms is not None and 0 < final.first_token_ms <= final.total_ms < 1000
        assert ok.outstanding == 0
    (body,) = server.requests
    assert body["model"] == "ok"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        64, 0.3, 0.9, ["###"], 7
    )  # fmt: skip


async def test_unset_params_are_not_sent(server: FaultServer) -> None:
    async with backend(server.url, "ok") as ok:
        await ok.chat(ChatRequest(MESSAGES))
    (body,) = server.requests
    assert not {"max_tokens", "stop", "seed"} & body.keys()


async def test_a_continuation_is_sent_as_a_trailing_assistant_message(server: FaultServer) -> None:
    async with backend(server.url, "ok") as ok:
        completion = await ok.chat(ChatRequest(MESSAGES, continuation="Start with two short walks"))
    assert completion.text == ANSWER  # only what this backend generated
    (body,) = server.requests
    assert body["messages"][-1] == {"role": "assistant", "content": "Start with two short walks"}
    assert len(body["messages"]) == len(MESSAGES) + 1


async def test_chat_returns_the_whole_answer(server: FaultServer) -> None:
    async with backend(server.url, "ok") as ok:
        completion = await ok.chat(REQUEST)
    assert completion.text == ANSWER
    assert completion.finish_reason == "stop"
    assert completion.usage.total_tokens == prompt_tokens([{"content": m.content} for m in MESSAGES]) + len(
        answer_pieces()
    )


async def test_without_usage_from_the_peer_tokens_are_estimated(server: FaultServer) -> None:
    async with backend(server.url, "ok", default_headers={"x-fault-usage": "off"}) as ok:
        completion = await ok.chat(REQUEST)
    assert completion.text == ANSWER
    assert completion.usage.completion_tokens == len(answer_pieces())
    assert completion.usage.prompt_tokens == math.ceil(sum(len(m.content) for m in MESSAGES) / 4)


async def test_live_measurements_are_ewma_of_each_request(server: FaultServer) -> None:
    async with backend(server.url, "ok") as ok:
        info = ok.info()
        assert info.kind == "cloud" and info.model == "ok"
        assert info.details["ttft_ms_ewma"] is None and info.details["decode_tps_ewma"] is None
        first = await ok.chat(REQUEST)
        second = await ok.chat(REQUEST)
        details = ok.info().details

    def tps(c: Any) -> float:
        return (c.usage.completion_tokens - 1) / ((c.total_ms - c.first_token_ms) / 1000)

    assert details["ttft_ms_ewma"] == pytest.approx(0.8 * first.first_token_ms + 0.2 * second.first_token_ms)
    assert details["decode_tps_ewma"] == pytest.approx(0.8 * tps(first) + 0.2 * tps(second), rel=1e-6)
    assert details["outstanding"] == 0
    assert details["base_url"] == server.url and details["model"] == "ok"


async def test_outstanding_counts_requests_in_flight(server: FaultServer) -> None:
    async with backend(server.url, "slow-first-token", default_headers={"x-fault-delay": "0.3"}) as slow:
        first, second = slow.stream(REQUEST), slow.stream(REQUEST)
        assert await anext(first) == Chunk() and await anext(second) == Chunk()
        assert slow.outstanding == 2
        assert slow.info().details["outstanding"] == 2
        assert (await slow.health()).queue_depth == 2
        await first.aclose()
        assert slow.outstanding == 1
        rest = [chunk async for chunk in second]
        assert rest[-1].final is not None
        assert slow.outstanding == 0


async def test_calls_beyond_max_inflight_are_refused_at_once(server: FaultServer) -> None:
    headers = {"x-fault-delay": "1.5"}  # the two calls stay in flight for the whole test
    capped_backend = backend(
        server.url, "slow-first-token", max_inflight=2, default_headers=headers, connect_timeout=0.5
    )
    async with capped_backend as capped:
        first, second = capped.stream(REQUEST), capped.stream(REQUEST)
        assert await anext(first) == Chunk() and await anext(second) == Chunk()
        assert capped.saturated and capped.info().details["max_inflight"] == 2
        with pytest.raises(Overloaded) as caught:
            await anext(capped.stream(REQUEST))
        assert caught.value.status == 429 and caught.value.retry_after is not None and caught.value.retry_after >= 1
        assert len(server.requests) == 2  # the refused call never reached the peer
        assert await capped.probe() is True  # a health probe does not wait behind the full pool
        await first.aclose()
        assert not capped.saturated
        assert (await capped.chat(REQUEST)).text == ANSWER  # a freed slot is taken again
        assert [chunk async for chunk in second][-1].final is not None
        assert capped.outstanding == 0


async def test_an_error_event_in_the_stream_is_a_backend_error(server: FaultServer) -> None:
    async with backend(server.url, "error-event") as faulty:
        with pytest.raises(BackendError) as caught:
            await faulty.chat(REQUEST)
    assert "overloaded mid-answer" in caught.value.message
    assert not is_peer_failure(caught.value)


# ---- failures ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "error_type", "before_first_token", "peer_failure", "text_seen"),
    [
        ("error-500", BackendError, True, True, []),
        ("error-400", BackendError, True, False, []),
        ("error-429", BackendRateLimited, True, False, []),
        ("drop-before-first", BackendError, True, True, [""]),
        ("drop-mid", BackendError, False, True, ["", *answer_pieces()[:3]]),
    ],
)
async def test_fault_modes_raise_the_right_error(
    server: FaultServer,
    mode: str,
    error_type: type[BackendError],
    before_first_token: bool,
    peer_failure: bool,
    text_seen: list[str],
) -> None:
    seen: list[Chunk] = []
    async with backend(server.url, mode) as faulty:
        with pytest.raises(BackendError) as caught:
            await collect(faulty.stream(REQUEST), seen)
        assert faulty.outstanding == 0
        assert faulty.info().details["last_error"] == caught.value.message
    error = caught.value
    assert type(error) is error_type
    assert error.backend == f"fault-{mode}"
    assert error.before_first_token is before_first_token
    assert is_peer_failure(error) is peer_failure
    assert error.__cause__ is not None
    assert [c.text for c in seen] == text_seen
    assert len(server.requests) == 1  # max_retries=0: the hybrid engine owns fallback


async def test_peer_context_error_is_a_502_with_the_peers_words(server: FaultServer) -> None:
    async with backend(server.url, "error-400") as faulty:
        with pytest.raises(BackendError) as caught:
            await faulty.chat(REQUEST)
    assert caught.value.status == 502
    assert CONTEXT_ERROR in caught.value.message


async def test_rate_limit_keeps_retry_after(server: FaultServer) -> None:
    async with backend(server.url, "error-429") as limited:
        with pytest.raises(BackendRateLimited) as caught:
            await limited.chat(REQUEST)
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429


@pytest.mark.parametrize("mode", ["hang", "slow-first-token"])
async def test_first_token_timeout_is_honoured(server: FaultServer, mode: str) -> None:
    seen: list[Chunk] = []
    async with backend(server.url, mode, first_token_timeout=0.5) as slow:
        started = time.perf_counter()
        with pytest.raises(BackendTimeout) as caught:
            await collect(slow.stream(REQUEST), seen)
        elapsed = time.perf_counter() - started
    assert 0.45 < elapsed < 1.5
    assert caught.value.before_first_token is True
    assert caught.value.status == 504
    assert "0.5 s" in caught.value.message
    # slow-first-token starts its 200 at once (admitted, then silence); hang never answers at all.
    assert seen == ([] if mode == "hang" else [Chunk()])
    await wait_until(lambda: server.disconnects == 1)  # our deadline hung up on the peer


async def test_total_timeout_after_tokens_is_not_before_first_token(server: FaultServer) -> None:
    seen: list[Chunk] = []
    headers = {"x-fault-delay": "0.1"}
    slow_stream = backend(
        server.url, "slow-stream", first_token_timeout=0.5, total_timeout=0.8, default_headers=headers
    )
    async with slow_stream as slow:
        started = time.perf_counter()
        with pytest.raises(BackendTimeout) as caught:
            await collect(slow.stream(REQUEST), seen)
        elapsed = time.perf_counter() - started
    assert 0.75 < elapsed < 1.5
    assert caught.value.before_first_token is False
    assert 4 <= len([c for c in seen if c.text]) <= 9
    await wait_until(lambda: server.disconnects == 1)


async def test_closing_the_stream_early_closes_the_connection(server: FaultServer) -> None:
    async with backend(server.url, "slow-stream", default_headers={"x-fault-delay": "0.2"}) as slow:
        chunks = slow.stream(REQUEST)
        assert await anext(chunks) == Chunk()
        assert (await anext(chunks)).text == "word0 "
        await chunks.aclose()
        assert slow.outstanding == 0
        await wait_until(lambda: server.disconnects == 1)


async def test_cancelling_the_consumer_closes_the_connection(server: FaultServer) -> None:
    async with backend(server.url, "slow-first-token") as slow:
        task = asyncio.create_task(slow.chat(REQUEST))
        await wait_until(lambda: slow.outstanding == 1 and len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert slow.outstanding == 0
        await wait_until(lambda: server.disconnects == 1)


async def test_connection_refused_fails_fast_and_marks_the_backend_down() -> None:
    async with backend(f"http://127.0.0.1:{free_port()}/v1", "ok") as nowhere:
        assert (await nowhere.health()).ok
        started = time.perf_counter()
        with pytest.raises(BackendError) as caught:
            await nowhere.chat(REQUEST)
        assert time.perf_counter() - started < 1.0
        health = await nowhere.health()
        assert not health.ok and "connection failed" in health.reason
        assert nowhere.info().details["last_error_at"] is not None
    assert type(caught.value) is BackendError
    assert caught.value.before_first_token is True
    assert is_peer_failure(caught.value)
    # The kind of failure, never the peer's address (exception texts name hosts, ports and socket paths).
    assert caught.value.message == "fault-ok: connection failed: connection refused", caught.value.message
    assert "127.0.0.1" not in health.reason


async def test_a_missing_engine_socket_is_reported_without_its_path(tmp_path: Path) -> None:
    socket_path = str(tmp_path / "engine.sock")
    engine = OpenAICompatBackend("engine", "http://engine/v1", "m", kind="pool", socket_path=socket_path)
    try:
        with pytest.raises(BackendError) as caught:
            await engine.chat(REQUEST)
        assert await engine.probe() is False
        reason = (await engine.health()).reason
    finally:
        await engine.aclose()
    for text in (caught.value.message, reason, engine.info().details["last_error"]):
        assert str(tmp_path) not in str(text) and "engine.sock" not in str(text), text
    assert caught.value.message == "engine: connection failed: connection refused"


async def test_probe_follows_the_peer_state(server: FaultServer) -> None:
    async with backend(server.url, "ok", kind="pool") as peer:
        assert peer.info().kind == "pool"
        assert await peer.probe() is True
        async with httpx.AsyncClient() as http:
            assert (await http.post(server.url.removesuffix("/v1") + "/fault/down")).status_code == 200
        assert await peer.probe() is False
        health = await peer.health()
        assert not health.ok and "503" in health.reason
        with pytest.raises(BackendError) as caught:
            await peer.chat(REQUEST)
        assert is_peer_failure(caught.value) and "fault server is down" in caught.value.message
        server.up()
        assert await peer.probe() is True
        assert (await peer.health()).ok


async def wait_until(condition: Callable[[], bool]) -> None:
    """Polls: the state lives in the fault server's thread, where no asyncio.Event of ours can be set."""
    for _ in range(150):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 3 s")


# ---- the real peer -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_server(llama_cpp_peer: str) -> str:
    return llama_cpp_peer


@pytest.mark.slow
async def test_real_llama_server_streams_text_and_usage(llama_server: str) -> None:
    request = ChatRequest(
        (ChatMessage("system", COACH_SYSTEM_PROMPT), ChatMessage("user", "Give me one tip to sleep better.")),
        GenerationParams(max_tokens=24, temperature=0.0),
    )
    async with backend(llama_server, "default", kind="pool", first_token_timeout=60, total_timeout=120) as peer:
        assert await peer.probe() is True
        chunks = [chunk async for chunk in peer.stream(request)]
        assert chunks[0] == Chunk()
        text = "".join(c.text for c in chunks)
        final = chunks[-1].final
        assert final is not None
        assert len(text.strip()) > 10
        assert final.finish_reason in ("stop", "length")
        assert 0 < final.usage.completion_tokens <= 24
        assert final.usage.prompt_tokens > 50  # the coach system prompt alone is ~90 tokens
        assert final.first_token_ms is not None and 0 < final.first_token_ms < final.total_ms
        assert peer.info().details["ttft_ms_ewma"] == final.first_token_ms


@pytest.mark.slow
async def test_real_llama_server_context_overflow_is_an_empty_stream(llama_server: str) -> None:
    # llama_cpp.server answers a streamed request that overflows its context with a 200 and an empty body (the
    # non-streamed one gets a proper 400): no finish_reason, so a dropped stream, before any token, and not a
    # reason to take the replica out of rotation.
    too_long = ChatRequest((ChatMessage("user", "habit " * 3000),), GenerationParams(max_tokens=8))
    async with backend(llama_server, "default", kind="pool", first_token_timeout=60) as peer:
        with pytest.raises(BackendError) as caught:
            await peer.chat(too_long)
        assert (await peer.health()).ok
    assert type(caught.value) is BackendError
    assert caught.value.before_first_token is True
    assert not is_peer_failure(caught.value)
    assert "without a finish_reason" in caught.value.message
