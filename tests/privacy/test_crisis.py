"""Crisis resources per country: every entry's shape, the choice of country and language, and the wiring."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from upcoach.language import LANGUAGES, identify
from upcoach.privacy.crisis import crisis_resources, parse_table, table
from upcoach.privacy.special_category import detect_special_categories

# A self-harm message per language, written natively, and the country whose lines its writer gets without a locale.
SELF_HARM = {
    "en": ("I don't want to live anymore, I want to kill myself.", "US"),
    "de": ("Ich will nicht mehr leben, ich will mich umbringen.", "DE"),
    "fr": ("Je n'ai plus envie de vivre, je veux me suicider.", "FR"),
    "es": ("Ya no quiero vivir, quiero suicidarme.", "ES"),
    "it": ("Non voglio più vivere, voglio togliermi la vita.", "IT"),
    "pt": ("Não quero mais viver, quero me matar.", "BR"),
    "nl": ("Ik wil niet meer leven, ik wil een einde aan mijn leven maken.", "NL"),
    "pl": ("Nie chcę już żyć, chcę się zabić.", "PL"),
    "tr": ("Artık yaşamak istemiyorum, kendimi öldürmek istiyorum.", "TR"),
    "ar": ("لا أريد أن أعيش بعد الآن، أريد أن أنتحر.", "EG"),
    "hi": ("मैं अब और जीना नहीं चाहता, मैं खुद को मार डालना चाहता हूँ।", "IN"),
    "ja": ("もう生きていたくない。死にたい。", "JP"),
}
# Locales whose region picks another country than the language's own.
REGIONAL = [("pt-PT", "pt", "PT"), ("es-MX", "es", "MX"), ("en-GB", "en", "GB"), ("fr-BE", "fr", "BE"),
            ("nl-BE", "nl", "BE"), ("de-AT", "de", "AT"), ("de-CH", "de", "CH"), ("en-IN", "en", "IN"),
            ("ar-LB", "ar", "LB"), ("en-CA", "en", "CA"), ("es-AR", "es", "AR")]  # fmt: skip


def shipped() -> dict[str, Any]:
    return json.loads(resources.files("upcoach.privacy").joinpath("data/crisis_lines.json").read_text("utf-8"))


def test_every_entry_has_its_shape() -> None:
    crisis = table()
    assert set(crisis.language_country) == set(LANGUAGES)
    for code, country in crisis.countries.items():
        assert country.code == code and country.emergency.isdigit()
        for line in country.lines:
            assert line.name.strip() and line.how.strip() and line.language.strip()
            assert sum(ch.isdigit() for ch in line.number) >= 3
            assert line.source.startswith("https://")
            assert line.hours is None or line.hours.strip()
    # The lines named in the brief are there, each verified.
    known = {("US", "988"), ("GB", "116 123"), ("IE", "116 123"), ("DE", "0800 111 0 111 / 0800 111 0 222"),
             ("FR", "3114"), ("ES", "024"), ("NL", "113 / 0800-0113"), ("BR", "188"), ("IN", "14416 / 1-800-891-4416"),
             ("IT", "02 2327 2327"), ("AT", "142"), ("CH", "143")}  # fmt: skip
    for code, number in known:
        assert any(line.number == number and line.verified for line in crisis.countries[code].lines), code


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_self_harm_message_in_each_language_gets_its_countrys_resources(language: str) -> None:
    text, code = SELF_HARM[language]
    assert detect_special_categories(text).self_harm, text
    assert identify(text) == language
    resources_text = crisis_resources(identify(text))
    country = table().countries[code]
    assert table().texts[language]["intro"] in resources_text
    assert country.emergency in resources_text
    for line in country.lines:
        assert line.number in resources_text
    assert "findahelpline.com" in resources_text


@pytest.mark.parametrize(("locale", "language", "code"), REGIONAL)
def test_the_locale_region_picks_the_country(locale: str, language: str, code: str) -> None:
    text = crisis_resources(language, locale=locale)
    assert table().country(locale=locale) is table().countries[code]
    for line in table().countries[code].lines:
        assert line.number in text


def test_the_region_setting_comes_before_the_locale() -> None:
    assert table().country("us", "es-MX", "es").code == "US"
    assert table().country("eu", "pt-PT", "pt").code == "PT"  # a residency area is not a country
    assert table().country(None, None, "ja").code == "JP"
    assert table().country().code == "US"
    # The words follow the message's language, the lines the user's country.
    text = crisis_resources("es", region="us")
    assert text.startswith(table().texts["es"]["intro"]) and "988" in text


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["countries"]["US"]["lines"][0].pop("source"), "needs"),
        (lambda d: d["countries"]["US"]["lines"][0].update(source="988lifeline.org"), "https"),
        (lambda d: d["countries"]["US"]["lines"][0].update(number="9"), "needs"),
        (lambda d: d["countries"]["US"]["lines"][0].update(verified="yes"), "needs"),
        (lambda d: d["countries"].update(usa=d["countries"]["US"]), "alpha-2"),
        (lambda d: d["countries"]["DE"].update(emergency="call 112"), "emergency"),
        (lambda d: d["language_country"].pop("tr"), "every language"),
        (lambda d: d["language_country"].update(tr="XX"), "without an entry"),
        (lambda d: d["texts"].pop("hi"), "every language"),
        (lambda d: d["texts"]["ja"].update(emergency="119 に電話してください。"), "placeholder"),
    ],
)
def test_malformed_tables_are_refused(breakage: Any, message: str) -> None:
    data = copy.deepcopy(shipped())
    breakage(data)
    with pytest.raises(ValueError, match=message):
        parse_table(data)
