"""The answer checks shared by the offline evaluation and an update's smoke test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from upcoach.llm.base import ChatRequest, Chunk, Completion, Usage
from upcoach.modelstore.evaluation import (
    EvalPrompt,
    PromptSet,
    answer_checks,
    evaluate,
    load_prompt_set,
    sanity_problems,
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("\ufffd\ufffd\ufffd bad", "decode"),
        ("Hello!<|im_end|><|im_start|>user", "template"),
        ("<end_of_turn> hi", "template"),
        ("the the the the the the the the the the the the hello", "degenerate"),
        ("!!!!!!!!!!!!!!!!!!!!!!!!!", "degenerate"),
    ],
)
def test_insane_answers_are_caught(text: str, problem: str) -> None:
    problems = sanity_problems(text)
    assert problems and problem in " ".join(problems)


@pytest.mark.parametrize(
    "text",
    ["Hello, welcome! I'm glad you're here.", "Yes.", "Try putting your phone in another room 30 minutes before bed."],
)
def test_real_answers_pass(text: str) -> None:
    assert sanity_problems(text) == []


def test_prompt_checks_keywords_and_length() -> None:
    prompt = EvalPrompt("p", "capital of France?", ("paris",), 40)
    assert answer_checks(prompt, "The capital is Paris.") == []
    assert "expected keywords" in answer_checks(prompt, "It is Lyon.")[0]
    assert "more than 40" in answer_checks(prompt, "Paris, " + "really " * 10)[0]


def test_the_shipped_prompt_set_loads() -> None:
    prompt_set = load_prompt_set()
    assert prompt_set.system and len(prompt_set.prompts) >= 5
    assert len({p.id for p in prompt_set.prompts}) == len(prompt_set.prompts)
    assert all(p.user and p.expect_any for p in prompt_set.prompts)


class CannedBackend:
    """Answers every prompt with one fixed text, in two chunks, like a streaming engine."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        half = len(self.answer) // 2
        yield Chunk(self.answer[:half])
        yield Chunk(self.answer[half:])
        yield Chunk(final=Completion("", "stop", Usage(10, 7), "canned", first_token_ms=5.0, total_ms=9.0))


async def test_evaluate_scores_each_prompt_of_the_set() -> None:
    prompt_set = PromptSet("sys", (EvalPrompt("a", "q", ("paris",), 100), EvalPrompt("b", "q", ("yes",), 100)))
    report = await evaluate(CannedBackend("Yes, it is Paris."), "canned", prompt_set)  # type: ignore[arg-type]
    assert report.passed == 2
    failing = await evaluate(CannedBackend("Lyon."), "canned", prompt_set)  # type: ignore[arg-type]
    view = failing.to_json()
    assert view["passed"] == 0 and view["score"] == 0.0 and view["total"] == 2
    assert all(p["completionTokens"] == 7 and p["failures"] for p in view["prompts"])  # type: ignore[union-attr]
