"""Parallel one-line answers (``ChatRequest.branches``) in the real llama.cpp engine: distinct, each following
the grammar, and leaving the context exactly as the single-sequence path expects it."""

from __future__ import annotations

import numpy as np
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
    """The highest position each branch sequence holds (-1: empty)."""
    import llama_cpp

    memory = engine._llama._ctx.memory  # type: ignore[union-attr]
    return [llama_cpp.llama_memory_seq_pos_max(memory, s) for s in range(1, MAX_BRANCHES + 1)]


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
    assert branch_cells(engine) == [-1] * MAX_BRANCHES


async def first_token_logits(engine: LlamaCppEngine, question: str) -> np.ndarray:
    """The model's scores for the first answer token of ``question``, computed by the engine's own prefix reuse."""
    import llama_cpp

    request = ChatRequest(greedy(question).messages, GenerationParams(max_tokens=1, temperature=0.0))
    await engine.chat(request)  # one token: the context's logits still belong to the prompt's last token
    llama = engine._llama
    assert llama is not None
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama._model.vocab)  # type: ignore[attr-defined]
    return np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(n_vocab,)).astype(np.float64)  # type: ignore[attr-defined]


def sequence_zero_matches_the_engine(engine: LlamaCppEngine) -> bool:
    """Sequence 0 holds exactly the cells of the tokens the engine believes are in the context."""
    import llama_cpp

    llama = engine._llama
    memory = llama._ctx.memory  # type: ignore[union-attr]
    n = llama.n_tokens  # type: ignore[union-attr]
    return llama_cpp.llama_memory_seq_pos_max(memory, 0) == n - 1 and llama_cpp.llama_memory_seq_pos_min(memory, 0) == (
        0 if n else -1
    )


async def test_branches_leave_the_context_as_they_found_it(engine: LlamaCppEngine) -> None:
    # With branch cells left over, or sequence 0 holding a branch's tokens, the next request would attend to them
    # (or restore a polluted prefix) and its scores would move. Whole greedy answers are not compared byte for byte:
    # llama.cpp's arithmetic depends on where the cells sit in the KV buffer and on the batch shape, so a near-tie a
    # few tokens in can flip with no defect at all (it did, on CPUs without AMX). The first token's scores are
    # compared with a tolerance far below what a polluted context moves them by.
    question = "I can't sleep before big meetings. What can I do tonight?"
    before = await first_token_logits(engine, question)
    for chips in (chips_request(4), chips_request(3, "action"), chips_request(3, "action")):  # the last one warm
        await engine.chat(chips)
        assert branch_cells(engine) == [-1] * MAX_BRANCHES
        assert sequence_zero_matches_the_engine(engine)
        after = await first_token_logits(engine, question)
        assert np.allclose(after, before, rtol=0, atol=0.05), float(np.max(np.abs(after - before)))
        assert after.argmax() == before.argmax()
    answer = (await engine.chat(greedy(question))).text
    assert len(answer.split()) >= 8, answer


async def test_a_closed_stream_cancels_the_branches_and_the_engine_keeps_serving(engine: LlamaCppEngine) -> None:
    cancelled = engine.stats.cancelled
    stream = engine.stream(chips_request(5))
    assert (await anext(stream)).text == ""  # admitted: the worker is on it
    await stream.aclose()
    completion = await engine.chat(chips_request(2))  # queued behind the cancelled one: runs once it stopped
    assert engine.stats.cancelled == cancelled + 1
    assert len(completion.text.splitlines()) == 2
    assert branch_cells(engine) == [-1] * MAX_BRANCHES


async def test_branches_need_a_grammar_and_a_small_count(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest):
        await engine.chat(ChatRequest((ChatMessage("user", "hi"),), branches=2))
    with pytest.raises(InvalidRequest):
        await engine.chat(chips_request(MAX_BRANCHES + 1))
    assert (await engine.health()).ok
