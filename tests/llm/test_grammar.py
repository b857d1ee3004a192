"""Grammar-constrained output in the real llama.cpp engine: followed exactly, checked up front, cached."""

from __future__ import annotations

import pytest

from upcoach.coaching.chips import chip_grammar, parse_chips
from upcoach.errors import InvalidRequest
from upcoach.llm.base import ChatMessage, ChatRequest, GenerationParams
from upcoach.llm.llamacpp import LlamaCppEngine
from upcoach.llm.openai_compat import OpenAICompatBackend

# The engine fixture lives on the session event loop (the project default), so the tests run on it too.
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def engine(llama_engine: LlamaCppEngine) -> LlamaCppEngine:
    return llama_engine


def ask(content: str, grammar: str | None, max_tokens: int = 24, temperature: float = 0.8) -> ChatRequest:
    return ChatRequest(
        (ChatMessage("user", content),), GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=7),
        grammar=grammar,
    )  # fmt: skip


async def test_output_follows_the_grammar_and_stops_when_it_is_complete(engine: LlamaCppEngine) -> None:
    # Unconstrained, this model answers with a sentence; under the grammar it can only say one of three words.
    for question in ("Is the sky green? Explain at length.", "Write a poem about the sea."):
        completion = await engine.chat(ask(question, 'root ::= ("yes" | "no" | "maybe") "."'))
        assert completion.text in ("yes.", "no.", "maybe.")
        assert completion.finish_reason == "stop"


async def test_chip_grammar_gives_exactly_count_short_lines(engine: LlamaCppEngine) -> None:
    for count in (1, 4):
        completion = await engine.chat(
            ask("Suggest replies to: I feel stuck at work.", chip_grammar(count), max_tokens=80, temperature=0.9)
        )
        lines = completion.text.split("\n")
        assert lines[-1] == "" and len(lines) == count + 1, completion.text
        for line in lines[:-1]:
            assert 1 <= len(line.split(" ")) <= 8 and line[0] not in "0123456789-*", line
            assert not set(line) & set('.:"()[]'), line
        assert len(parse_chips(completion.text, count)) >= 1


async def test_a_grammar_that_does_not_parse_is_a_400_and_the_engine_keeps_serving(engine: LlamaCppEngine) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await engine.chat(ask("hello", "root ::= ( unclosed"))
    assert caught.value.param == "grammar"
    assert (await engine.chat(ask("Say hi.", 'root ::= "hi"'))).text == "hi"
    assert (await engine.health()).ok


async def test_backends_that_cannot_follow_a_grammar_refuse() -> None:
    cloud = OpenAICompatBackend(name="cloud", base_url="http://127.0.0.1:9/v1", model="m", kind="cloud")
    try:
        with pytest.raises(InvalidRequest, match="cannot follow a grammar"):
            await cloud.chat(ask("hi", 'root ::= "hi"'))
    finally:
        await cloud.aclose()
