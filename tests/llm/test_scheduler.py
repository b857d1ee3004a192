"""The continuous-batching scheduler on the real model, through the engine the app builds (engine_config_for):
many streams at once, each with its own limits, stops, usage and cancellation, and a bounded waiting room."""

from __future__ import annotations

import asyncio
import math

import pytest

from tests.conftest import COACH_SYSTEM_PROMPT
from upcoach.errors import Overloaded
from upcoach.llm.base import ChatMessage, ChatRequest, Chunk, Completion, GenerationParams
from upcoach.llm.llamacpp import MAX_BRANCHES, LlamaCppEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTIONS = (
    "How do I sleep better before exams?",
    "I want to run my first 5k in spring.",
    "Help me stop procrastinating on my thesis.",
    "How can I keep calm in long meetings?",
)


@pytest.fixture
def engine(llama_engine: LlamaCppEngine) -> LlamaCppEngine:
    return llama_engine


def ask(question: str, max_tokens: int, *, stop: tuple[str, ...] = (), temperature: float = 0.0) -> ChatRequest:
    messages = (ChatMessage("system", COACH_SYSTEM_PROMPT), ChatMessage("user", question))
    return ChatRequest(messages, GenerationParams(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=7))


def live_cells(engine: LlamaCppEngine) -> list[int]:
    """Highest position of every sequence but 0 (the shared system prompt); -1 means empty."""
    import llama_cpp

    memory = engine._llama._ctx.memory  # type: ignore[union-attr]
    return [llama_cpp.llama_memory_seq_pos_max(memory, s) for s in range(1, engine.config.parallel + MAX_BRANCHES)]


async def admitted(engine: LlamaCppEngine, request: ChatRequest) -> object:
    """A stream whose request the engine accepted (its first, empty chunk has arrived)."""
    stream = engine.stream(request)
    first = await anext(stream)
    assert first.text == "" and first.final is None
    return stream


async def drain(stream: object) -> tuple[str, Completion]:
    text: list[str] = []
    async for chunk in stream:  # type: ignore[attr-defined]
        assert isinstance(chunk, Chunk)
        if chunk.final is not None:
            return "".join(text), chunk.final
        text.append(chunk.text)
    raise AssertionError("the stream ended without a final chunk")


async def test_eight_concurrent_streams_keep_their_own_limits_stops_and_usage(engine: LlamaCppEngine) -> None:
    alone = await engine.chat(ask(QUESTIONS[0], 20))
    requests = [ask(QUESTIONS[i % 4], 12 + 4 * i) for i in range(6)]
    requests.append(ask("Count from one to twenty in words, separated by commas.", 60, stop=("Five", "five")))
    requests.append(ask(QUESTIONS[0], 20))  # the lone request again, now among seven others
    decoded_together = engine._scheduler.step.max_decode  # type: ignore[union-attr]
    results = await asyncio.gather(*(engine.chat(request) for request in requests))
    for index, completion in enumerate(results[:6]):
        assert completion.finish_reason == "length", completion
        assert completion.usage.completion_tokens == 12 + 4 * index
        assert completion.usage.prompt_tokens > completion.usage.cached_tokens > 0  # the system prompt is shared
        assert len(completion.text.split()) >= 4, completion.text
    stopped = results[6]
    assert stopped.finish_reason == "stop" and "five" not in stopped.text.casefold(), stopped.text
    assert stopped.text.count(",") >= 3, stopped.text  # it did count, and stopped at the stop string
    assert stopped.usage.completion_tokens < 60
    among = results[7]
    # Batched arithmetic may differ in the last digits from a lone run: the same limits and a coherent answer,
    # not byte equality.
    assert among.usage.prompt_tokens == alone.usage.prompt_tokens
    assert among.usage.completion_tokens == alone.usage.completion_tokens == 20
    assert len(among.text.split()) >= 8 and len(alone.text.split()) >= 8
    assert engine._scheduler.step.max_decode >= max(decoded_together, 6)  # type: ignore[union-attr]
    assert live_cells(engine) == [-1] * len(live_cells(engine))


async def test_cancelling_one_stream_leaves_the_others_untouched(engine: LlamaCppEngine) -> None:
    cancelled = engine.stats.cancelled
    streams = [await admitted(engine, ask(QUESTIONS[i], 24)) for i in range(4)]
    victim = streams.pop(1)
    await anext(victim)  # it has started to answer
    await victim.aclose()  # type: ignore[attr-defined]
    results = await asyncio.gather(*(drain(stream) for stream in streams))
    for text, final in results:
        assert final.finish_reason == "length" and final.usage.completion_tokens == 24, final
        assert len(text.split()) >= 8, text
    assert engine.stats.cancelled == cancelled + 1
    assert live_cells(engine) == [-1] * len(live_cells(engine))


async def test_a_long_prompt_arriving_mid_run_is_prefilled_in_chunks_beside_the_running_streams(
    engine: LlamaCppEngine,
) -> None:
    scheduler = engine._scheduler
    assert scheduler is not None
    chunk = engine.config.prefill_chunk
    running = [await admitted(engine, ask(QUESTIONS[i], 400)) for i in range(3)]
    for stream in running:
        await anext(stream)  # all three decode now
    long_question = "Here is my week, hour by hour: " + " ".join(f"at {h} I worked on task {h}." for h in range(40))
    decoded_before = scheduler.step.decode_tokens
    late = await admitted(engine, ask(long_question, 4))
    await anext(late)  # its first token: the whole prompt is in
    decoded_during = scheduler.step.decode_tokens - decoded_before
    _, final = await drain(late)
    for stream in running:
        await stream.aclose()  # type: ignore[attr-defined]
    own = final.usage.prompt_tokens - final.usage.cached_tokens
    steps = math.ceil(own / chunk)
    assert own > 2 * chunk, final.usage
    # No step held more than one chunk of prompt, and the three streams got a token in every step meanwhile.
    assert scheduler.step.max_prefill <= chunk
    assert decoded_during >= 3 * (steps - 1), (decoded_during, steps)


async def test_a_full_waiting_room_answers_overloaded_with_retry_after(engine: LlamaCppEngine) -> None:
    streams = [await admitted(engine, ask(QUESTIONS[i % 4], 300)) for i in range(engine.capacity)]
    assert not (await engine.health()).ok
    with pytest.raises(Overloaded) as refused:
        await engine.chat(ask("One more?", 8))
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    completion = await engine.chat(ask("Still there?", 4))  # the room frees as the streams close
    assert completion.usage.completion_tokens == 4
    assert (await engine.health()).ok
