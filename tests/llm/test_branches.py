"""Parallel one-line answers (``ChatRequest.branches``) in the real llama.cpp engine: distinct, each following
the grammar, decoded as ordinary sequences of the scheduler, and leaving no cells behind."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import COACH_SYSTEM_PROMPT
from upcoach.coaching.chips import _conversation, chip_grammar, parse_chips, system_prompt
from upcoach.errors import InvalidRequest
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import MAX_BRANCHES, LlamaCppEngine

pytestmark = pytest.mark.asyncio(loop_scope="session")

CONVERSATION = (ChatMessage("assistant", "What happened?"), ChatMessage("user", "My manager criticised my talk."))


@pytest.fixture
def engine(llama_engine: LlamaCppEngine) -> LlamaCppEngine:
    return llama_engine


def chips_request(n: int, style: str = "default") -> ChatRequest:
    return ChatRequest(
        (ChatMessage("system", system_prompt(style, "en")), ChatMessage("user", _conversation(CONVERSATION, n))),
        GenerationParams(max_tokens=12, temperature=0.0),
        grammar=chip_grammar(1),
        branches=n,
    )


def greedy(question: str) -> ChatRequest:
    messages = (ChatMessage("system", COACH_SYSTEM_PROMPT), ChatMessage("user", question))
    return ChatRequest(messages, GenerationParams(max_tokens=24, temperature=0.0))


def branch_cells(engine: LlamaCppEngine) -> list[int]:
    """The highest position each conversation or branch sequence holds (-1: empty); sequence 0 is the shared
    system prompt's and is left out."""
    import llama_cpp

    memory = engine._llama._ctx.memory  # type: ignore[union-attr]
    n_seq = engine.config.parallel + MAX_BRANCHES
    return [llama_cpp.llama_memory_seq_pos_max(memory, s) for s in range(1, n_seq)]


def idle(engine: LlamaCppEngine) -> list[int]:
    return [-1] * (engine.config.parallel + MAX_BRANCHES - 1)


async def test_each_branch_is_one_distinct_valid_chip(engine: LlamaCppEngine) -> None:
    for n in (3, 5):
        completion = await engine.chat(chips_request(n))
        lines = completion.text.split("\n")
        assert lines[-1] == "" and len(lines) == n + 1, completion.text
        for line in lines[:-1]:
            assert 1 <= len(line.split(" ")) <= 8 and line[0] not in "0123456789-* ", line
            assert not set(line) & set('.:"()[]'), line
        assert len({line.split(" ")[0].casefold() for line in lines[:-1]}) == n, completion.text
        assert len(parse_chips(completion.text, n)) >= n - 1, completion.text
        assert completion.finish_reason == "stop"
    assert branch_cells(engine) == idle(engine)


async def test_branches_free_their_cells_and_leave_other_sequences_untouched(engine: LlamaCppEngine) -> None:
    # llama.cpp's arithmetic depends on the batch's shape, so the same greedy request is not byte-equal run
    # alone and beside chips: the behaviour is what is asserted. The shared system prompt (sequence 0) must hold
    # the same cells after chips as before, every branch cell must be freed, and answers stay coherent.
    import llama_cpp

    memory = engine._llama._ctx.memory  # type: ignore[union-attr]
    question = "I can't sleep before big meetings. What can I do tonight?"
    before = await engine.chat(greedy(question))
    prefix_end = llama_cpp.llama_memory_seq_pos_max(memory, 0)
    assert prefix_end > 0  # the coach system prompt is shared from sequence 0
    beside = await asyncio.gather(engine.chat(greedy(question)), engine.chat(chips_request(4)))
    await engine.chat(chips_request(3, "action"))
    after = await engine.chat(greedy(question))
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == prefix_end
    for answer in (before, beside[0], after):
        assert answer.usage.completion_tokens == 24 and answer.finish_reason == "length", answer
        assert len(answer.text.split()) >= 8, answer.text
        assert answer.usage.cached_tokens > 0
    assert len(beside[1].text.splitlines()) == 4
    assert branch_cells(engine) == idle(engine)


async def test_a_closed_stream_cancels_the_branches_and_the_engine_keeps_serving(engine: LlamaCppEngine) -> None:
    cancelled = engine.stats.cancelled
    stream = engine.stream(chips_request(5))
    assert (await anext(stream)).text == ""  # admitted: the worker is on it
    await stream.aclose()
    completion = await engine.chat(chips_request(2))  # queued behind the cancelled one: runs once it stopped
    assert engine.stats.cancelled == cancelled + 1
    assert len(completion.text.splitlines()) == 2
    assert branch_cells(engine) == idle(engine)


async def test_branches_need_a_grammar_and_a_small_count(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest):
        await engine.chat(ChatRequest((ChatMessage("user", "hi"),), branches=2))
    with pytest.raises(InvalidRequest):
        await engine.chat(chips_request(MAX_BRANCHES + 1))
    assert (await engine.health()).ok
