"""The one language identifier: accuracy on short native messages, the locale prior, scripts, and its users."""

from __future__ import annotations

from pathlib import Path

import pytest

from upcoach.coaching.sentiment import analyse
from upcoach.language import LANGUAGES, Locale, identify, likely
from upcoach.llm.base import ChatMessage
from upcoach.routing.features import extract

DATA = Path(__file__).parent / "data" / "short_messages.txt"


def rows() -> list[tuple[str, str]]:
    lines = DATA.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(" | ", 1)) for line in lines if line and not line.startswith("#")]  # type: ignore[misc]


def test_the_set_covers_every_language() -> None:
    assert {lang for lang, _ in rows()} == set(LANGUAGES)


@pytest.mark.parametrize(("locale", "floor"), [(None, 0.95), ("own", 0.99), ("en-US", 0.95)])
def test_short_messages_are_identified(locale: str | None, floor: float) -> None:
    data = rows()
    right = sum(identify(text, lang if locale == "own" else locale) == lang for lang, text in data)
    assert right / len(data) >= floor


def test_the_locale_is_a_prior_not_an_override() -> None:
    assert identify("ok") == "en"
    assert identify("ok", "tr-TR") == "tr"
    assert identify("no", "es-MX") == "es"
    assert identify("Ich bin heute wirklich müde und traurig", "en-US") == "de"
    assert identify("Je n'arrive plus à dormir la nuit", "ja-JP") == "fr"


def test_the_script_decides_where_it_can() -> None:
    assert identify("taxi", "ar-EG") != "ar"  # no Arabic letters: never Arabic, even for an Arabic locale
    assert identify("ok 死にたい") == "ja"
    assert identify("مرحبا") == "ar"
    assert identify("नमस्ते") == "hi"
    assert identify("12345 !!!") == "en"
    assert identify("12345 !!!", "pl-PL") == "pl"


def test_mixed_messages_are_read_in_both_languages() -> None:
    both = likely("Can you help me? Ich weiß nicht mehr weiter mit meinem Chef und meiner Arbeit.")
    assert {"en", "de"} <= set(both)


def test_locales_parse() -> None:
    assert Locale.parse("pt-BR") == Locale("pt", "BR")
    assert Locale.parse("es_MX") == Locale("es", "MX")
    assert Locale.parse("zh-Hant-TW") == Locale(None, "TW")
    assert Locale.parse("en") == Locale("en", None)
    assert Locale.parse("not a locale!") == Locale(None, None)
    assert Locale.parse(None) == Locale(None, None)


def test_the_router_and_the_journal_ask_the_same_identifier() -> None:
    assert extract((ChatMessage("user", "Znowu nie mogę spać, co robić?"),)).language == "pl"
    assert extract((ChatMessage("user", "ok"),), locale="nl-NL").language == "nl"
    assert analyse("Ich bin heute sehr glücklich.").language == "unsupported"
    assert analyse("Great day!").language == "en"
