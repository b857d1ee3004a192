"""The strategies library in every language: a native-quality check per language file.

Each file under coaching/data/strategies/ must hold every English strategy (same order, category and number of
steps), at sane lengths next to the English, with no template leftovers and no English left in it. The checks run
on whatever language files ship, so a new language is checked the day its file lands.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from upcoach.coaching.library import MAX_CHIP_WORDS, load_builtin
from upcoach.coaching.textsearch import analyzers

DATA = resources.files("upcoach.coaching").joinpath("data")
ENGLISH = json.loads(DATA.joinpath("strategies.json").read_text("utf-8"))["strategies"]
LANGUAGES = sorted(f.name[:-5] for f in DATA.joinpath("strategies").iterdir() if f.name.endswith(".json"))
# Words that only English uses among the supported languages (not "a", "in", "no", "me", "was", "will", "is", "of",
# "to", "on", "die", "so": each is a word of another language too).
# Not "help", "want" or "been": Dutch words too ("help me", "want" = because, "been" = leg).
ENGLISH_ONLY = frozenset(
    "the and you your yours yourself with this that these those what which would should could about from have has "
    "they them their there being into just very when where while because before after every something "
    "someone anything nothing always never again feel need make take give it's don't i'm can't".split()
)
# Left behind by a template or an unfinished draft; square brackets are allowed only where the English has them.
LEFTOVERS = re.compile(r"\b(TODO|TBD|FIXME|XXX)\b|(?i:lorem ipsum)|\{\w*\}|<[a-z/]|\$\{|%[sd]\b|\?\?|\.\.\.\.")
TEXT_FIELDS = ("title", "summary")
LIST_FIELDS = ("steps", "chips")


def _file(language: str) -> list[dict[str, object]]:
    return json.loads(DATA.joinpath(f"strategies/{language}.json").read_text("utf-8"))["strategies"]


def _texts(entry: dict[str, object]) -> list[str]:
    return [str(entry[f]) for f in TEXT_FIELDS] + [str(t) for f in LIST_FIELDS for t in entry[f]]  # type: ignore[attr-defined]


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+(?:'[a-z]+)?", text.lower())


def test_the_four_first_translations_ship() -> None:
    assert {"de", "fr", "es", "it"} <= set(LANGUAGES)
    assert all(language in analyzers() for language in LANGUAGES)  # search knows how to read each of them


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_strategy_is_there_with_the_same_shape(language: str) -> None:
    entries = _file(language)
    assert [e["id"] for e in entries] == [f"{e['id']}-{language}" for e in ENGLISH]
    for source, entry in zip(ENGLISH, entries, strict=True):
        assert entry["locale"] == language and entry["category"] == source["category"], entry["id"]
        assert len(entry["steps"]) == len(source["steps"]), entry["id"]  # type: ignore[arg-type]
        assert entry["tags"] and entry["chips"], entry["id"]
        assert all(1 <= len(chip.split()) <= MAX_CHIP_WORDS for chip in entry["chips"]), entry["id"]  # type: ignore[union-attr]
        assert len(set(entry["steps"])) == len(entry["steps"]), entry["id"]  # type: ignore[arg-type]


@pytest.mark.parametrize("language", LANGUAGES)
def test_lengths_are_sane_next_to_the_english(language: str) -> None:
    # Japanese says in fewer characters what English says; German and French in more. Outside 0.25-2.5x (give or
    # take a few characters for short titles) a text is cut short or padded out; the whole file keeps a steadier
    # ratio than any one text.
    low = 0.25 if language == "ja" else 0.6
    total_en = total = 0
    for source, entry in zip(ENGLISH, _file(language), strict=True):
        pairs = [(str(source[f]), str(entry[f])) for f in TEXT_FIELDS]
        pairs += list(zip(source["steps"], entry["steps"], strict=True))  # type: ignore[arg-type]
        for english, written in pairs:
            assert 0.25 * len(english) - 8 <= len(written) <= 2.5 * len(english) + 20, (entry["id"], written)
            total_en += len(english)
            total += len(written)
    assert low <= total / total_en <= 1.8


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_placeholders_or_template_leftovers(language: str) -> None:
    for source, entry in zip(ENGLISH, _file(language), strict=True):
        for text in _texts(entry):
            assert text == text.strip() and "  " not in text and not LEFTOVERS.search(text), (entry["id"], text)
        brackets = sum(t.count("[") + t.count("［") for t in _texts(entry))  # Japanese writes them full-width
        assert brackets == sum(t.count("[") for t in _texts(source)), entry["id"]  # the if-then slots only


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_english_left(language: str) -> None:
    """No text copied from the English, and hardly a word that only English uses (a name like "Pomodoro", "WOOP" or
    "feedback" is fine: it is what speakers of the language say too)."""
    words = 0
    english_words: list[str] = []
    for source, entry in zip(ENGLISH, _file(language), strict=True):
        for english, written in zip(_texts(source), _texts(entry), strict=True):
            if len(english.split()) > 2:
                assert written.lower() != english.lower(), (entry["id"], written)
            found = [w for w in _words(written) if w in ENGLISH_ONLY]
            assert len(found) <= 1, (entry["id"], written)
            english_words += found
            words += len(_words(written))
    assert len(english_words) <= 0.002 * words, english_words


def test_the_shipped_library_loads_every_language() -> None:
    library = load_builtin()
    by_locale: dict[str, int] = {}
    for strategy in library:
        by_locale[strategy.locale] = by_locale.get(strategy.locale, 0) + 1
    assert by_locale == {"en": len(ENGLISH), **{language: len(ENGLISH) for language in LANGUAGES}}
