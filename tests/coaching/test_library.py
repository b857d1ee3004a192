"""The shipped strategies library: enough real entries, well formed, and a validator that rejects bad ones."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from upcoach.coaching.library import MAX_CHIP_WORDS, library_version, load_builtin, parse

RAW = json.loads(resources.files("upcoach.coaching").joinpath("data/strategies.json").read_text("utf-8"))
TOPICS = {"goals", "habits", "stress", "sleep", "focus", "motivation", "relationships", "confidence",
          "time-management", "communication", "resilience", "career"}  # fmt: skip


def test_library_has_at_least_100_valid_unique_strategies() -> None:
    strategies = load_builtin()
    assert len(strategies) >= 100
    assert len({s.id for s in strategies}) == len(strategies)
    assert TOPICS <= {s.category for s in strategies}
    for strategy in strategies:
        assert strategy.locale == "en"
        assert len(strategy.steps) >= 3, strategy.id
        assert strategy.tags and strategy.chips, strategy.id
        assert all(1 <= len(chip.split()) <= MAX_CHIP_WORDS for chip in strategy.chips), strategy.id
        assert len(strategy.summary) > 40, strategy.id


def test_version_is_stable_and_follows_content() -> None:
    strategies = load_builtin()
    assert library_version(strategies) == library_version(load_builtin())
    changed = parse({"strategies": [dict(RAW["strategies"][0], title="Another title"), *RAW["strategies"][1:]]})
    assert library_version(changed) != library_version(strategies)
    assert changed[0].content_hash != strategies[0].content_hash
    assert [s.content_hash for s in changed[1:]] == [s.content_hash for s in strategies[1:]]


def _with(**override: object) -> dict[str, object]:
    document = copy.deepcopy(RAW)
    document["strategies"][1].update(override)
    return document


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"strategies": "nope"}, "strategies"),
        (_with(id=RAW["strategies"][0]["id"]), "duplicate id"),
        (_with(id="Bad Id!"), "id must be"),
        (_with(chips=["one two three four five six seven eight nine"]), "at most 8 words"),
        (_with(steps=[]), "steps must be"),
        (_with(title="  "), "title must be"),
    ],
)
def test_bad_documents_are_rejected(document: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(document)


def test_chip_styles_are_distinct_prompt_templates() -> None:
    from upcoach.coaching.chips import CHIP_STYLES, system_prompt

    prompts = {style: system_prompt(style, "en") for style in CHIP_STYLES}
    assert len(set(prompts.values())) == len(CHIP_STYLES)
    assert "questions the user might ask" in prompts["question"] and "French" in system_prompt("question", "fr-CA")
