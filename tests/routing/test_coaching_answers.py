"""Issue 15 with the real default model through the factory-built engine: the ordinary questions that used to get
"I'm sorry, I can't assist with that." or a script are answered by the local model, on topic, with the persona, the
library's strategies as material and the catalog's decoding settings."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.wiring import Wiring, wiring
from upcoach.coaching.answer_checks import check_answer
from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.llm.llamacpp import LlamaCppEngine
from upcoach.routing.engine import HybridRequest
from upcoach.routing.policy import Hints

QUESTIONS = ("How do I drink more water during the day?", "How can I stop checking my phone in bed?")


@pytest.fixture(scope="module")
async def wired(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Wiring]:
    async with wiring(tmp_path_factory.mktemp("coaching-answers")) as wired:
        yield wired


@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("seed", [1, 2])
async def test_ordinary_questions_get_a_usable_local_answer(
    wired: Wiring, llama_engine: LlamaCppEngine, question: str, seed: int
) -> None:
    engine, recorder = wired.engine([llama_engine])
    outcome = await engine.process(
        HybridRequest(
            (ChatMessage("user", question),), GenerationParams(max_tokens=90, seed=seed, model_temperature=True),
            Hints("private"), f"req_{uuid.uuid4().hex}",
        )
    )  # fmt: skip
    assert outcome.backend == llama_engine.info().name, outcome.reasons  # the model answered, not the library
    # What issue 15 requires of every local answer: no refusal, no code, no repeated sentence, no absurd advice.
    # (Drift is judged against the strategies given too, as the engine's checks do: the harness measures it.)
    failures = {f.check for f in check_answer(outcome.text, question)}
    assert not failures & {"refusal", "unrequested_code", "repetition", "unsafe_advice"}, outcome.text
    assert "sorry" not in outcome.text.lower()
    assert outcome.strategy_ids and outcome.prompt_version
