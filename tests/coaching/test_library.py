"""The shipped strategies library: enough real entries, well formed, and a validator that rejects bad ones."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from upcoach.coaching.library import MAX_CHIP_WORDS, library_version, load_builtin, parse, translations
from upcoach.language import UNSPACED

RAW = json.loads(resources.files("upcoach.coaching").joinpath("data/strategies.json").read_text("utf-8"))
TOPICS = {"goals", "habits", "stress", "sleep", "focus", "motivation", "relationships", "confidence",
          "time-management", "communication", "resilience", "career"}  # fmt: skip


def test_library_has_at_least_100_valid_unique_strategies() -> None:
    library = load_builtin()
    strategies = [s for s in library if s.locale == "en"]
    assert len(strategies) >= 100 and library[: len(strategies)] == strategies  # English first, then translations
    assert len({s.id for s in library}) == len(library)
    assert TOPICS <= {s.category for s in strategies}
    for strategy in library:
        assert len(strategy.steps) >= 3, strategy.id
        assert strategy.tags and strategy.chips, strategy.id
        assert all(1 <= len(chip.split()) <= MAX_CHIP_WORDS for chip in strategy.chips), strategy.id
        # A Japanese sentence says in 20 characters what takes 40 letters in a spaced script.
        assert len(strategy.summary) > (20 if strategy.locale in UNSPACED else 40), strategy.id


def test_version_is_stable_and_follows_content() -> None:
    strategies = load_builtin()
    assert library_version(strategies) == library_version(load_builtin())
    changed = parse({"strategies": [dict(RAW["strategies"][0], title="Another title"), *RAW["strategies"][1:]]})
    assert library_version(changed) != library_version(strategies)
    assert changed[0].content_hash != strategies[0].content_hash
    assert [s.content_hash for s in changed[1:]] == [s.content_hash for s in strategies[1 : len(changed)]]


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


def _german() -> dict[str, object]:
    return json.loads(resources.files("upcoach.coaching").joinpath("data/strategies/de.json").read_text("utf-8"))


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["strategies"].pop(3), "ids must be the English ids"),
        (lambda d: d["strategies"].reverse(), "ids must be the English ids"),
        (lambda d: d["strategies"][0].update(id="goals-smart-fr"), "ids must be the English ids"),
        (lambda d: d["strategies"][0].update(locale="fr"), "locale must be 'de'"),
        (lambda d: d["strategies"][0].update(category="sleep"), "category and number of steps"),
        (lambda d: d["strategies"][0]["steps"].pop(), "category and number of steps"),
    ],
)
def test_bad_translation_files_are_rejected(edit: object, problem: str) -> None:
    english = [s for s in load_builtin() if s.locale == "en"]
    document = _german()
    assert len(translations(english, "de", document)) == len(english)
    edit(document)  # type: ignore[operator]
    with pytest.raises(ValueError, match=problem):
        translations(english, "de", document)
