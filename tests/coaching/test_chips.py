"""What the chips service keeps from the model's lines, the grammar it asks for, and chips from the real model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from upcoach.coaching.chips import ChipService, _conversation, _tail, chip_grammar, clean_chip, parse_chips
from upcoach.coaching.library import load_builtin
from upcoach.coaching.strategies import StrategyRepository
from upcoach.llm.base import ChatMessage
from upcoach.llm.llamacpp import LlamaCppEngine
from upcoach.storage.database import Database


def test_model_lines_are_cleaned_deduplicated_and_cut_to_count() -> None:
    output = '1. Tell me more.\n- tell me more\n"I\'ll try tonight"\nHelp me break it down\nA B C D E F G H I J\nx\n'
    # The numbering, quotes and trailing "." go; a case-insensitive duplicate, a copy of the prompt's examples and
    # a one-letter line are dropped; a line over 8 words is cut to 8.
    assert parse_chips(output, 5) == ["Tell me more", "I'll try tonight", "A B C D E F G H"]
    assert parse_chips(output, 2) == ["Tell me more", "I'll try tonight"]
    assert clean_chip("  Why not?  ") == "Why not?"
    assert parse_chips("Why do I avoid it?\nwhy do I avoid it\nWhy do I avoid it!\n", 3) == ["Why do I avoid it?"]
    branches = "I feel overwhelmed\nReally, I feel overwhelmed\nSeriously, I feel overwhelmed\nNo thanks\nThanks\n"
    assert parse_chips(branches, 5) == ["I feel overwhelmed", "No thanks", "Thanks"]
    assert parse_chips("Absolutely, I feel lost\nHonestly, I feel lost\nI feel lost today\n", 3) == [
        "Absolutely, I feel lost",
        "I feel lost today",
    ]


def test_grammar_shape_depends_on_count_and_script() -> None:
    assert chip_grammar(4).startswith("root ::= line line line line\n")
    assert "{0,7}" in chip_grammar(1)  # 1 + 7 words at most
    assert "\\u3000" in chip_grammar(2, "en") and "\\u3000" not in chip_grammar(2, "ja-JP")


def test_only_the_end_of_the_last_turns_goes_to_the_model() -> None:
    long = "word " * 200 + "the actual question at the end?"
    messages = [ChatMessage("system", "ignored"), ChatMessage("assistant", "How was it?"), ChatMessage("user", long)]
    prompt = _conversation(messages, 3)
    assert prompt.startswith("Coach: How was it?\nUser: …") and prompt.endswith("the end?\nWrite 3 replies.")
    assert len(_tail(long)) <= 201 and "ignored" not in prompt


@pytest.fixture
def engine(llama_engine: LlamaCppEngine) -> LlamaCppEngine:
    return llama_engine


@pytest_asyncio.fixture
async def service(tmp_path: Path) -> AsyncIterator[ChipService]:
    database = Database(f"sqlite:///{tmp_path / 'upcoach.db'}")
    await database.migrate()
    strategies = StrategyRepository(database)
    await strategies.publish(load_builtin())
    try:
        yield ChipService(strategies, budget_ms=60_000)
    finally:
        await database.dispose()


@pytest.mark.asyncio(loop_scope="session")
async def test_the_model_writes_count_distinct_chips_side_by_side(engine: LlamaCppEngine, service: ChipService) -> None:
    messages = [ChatMessage("assistant", "How are you feeling about the new role?"),
                ChatMessage("user", "Honestly a bit like an impostor.")]  # fmt: skip
    for count in (3, 5):
        result = await service.suggest(engine, messages, count=count, locale="en")
        assert result.source == "model" and len(result.chips) == count, result
        model_chips = [chip.text for chip in result.chips if chip.source == "model"]
        assert len(model_chips) >= count - 1, result  # at most one dropped as a copy of the prompt's examples
        assert len({chip.casefold() for chip in model_chips}) == len(model_chips)
        for chip in model_chips:
            assert 1 <= len(chip.split()) <= 8 and not set(chip) & set('.:"()[]\n'), chip


@pytest.mark.asyncio(loop_scope="session")
async def test_chips_fall_back_to_one_sequence_when_branches_fail(
    engine: LlamaCppEngine, service: ChipService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("llama_decode returned -1")

    # Branches fork from the first tokens the scheduler picks (llm/scheduler.py): break that step of a branched run.
    monkeypatch.setattr(engine._scheduler, "_first_tokens", broken)
    result = await service.suggest(engine, [ChatMessage("user", "I never find time to run.")], count=3, locale="en")
    assert result.source == "model" and len(result.chips) == 3 and result.chips[0].source == "model"
