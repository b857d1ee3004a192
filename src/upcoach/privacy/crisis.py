"""Crisis resources for a message that shows signs of self-harm: the lines of the user's country, in their language.

The lines are data (privacy/data/crisis_lines.json: per country its emergency number and its free crisis lines,
each with number, name, hours, language and source, and whether the number was verified). The country comes from
the user's region setting when it names one ("us", "de"; a residency area such as "eu" does not), then the locale's
region ("pt-BR"), then the language's most populous country; the words around the lines are in the language the
message was written in. Every answer also names the emergency number and findahelpline.com for anywhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from upcoach.language import DEFAULT, LANGUAGES, Locale

_COUNTRY = re.compile(r"[A-Z]{2}")
_LINE_FIELDS = ("name", "number", "how", "language", "source")
_TEXT_FIELDS = {"intro": (), "emergency": ("{number}",), "elsewhere": ("{fallback}",), "outro": ()}


@dataclass(frozen=True)
class CrisisLine:
    name: str
    number: str
    how: str
    hours: str | None  # None: not known to the table's authors
    language: str
    source: str
    verified: bool


@dataclass(frozen=True)
class Country:
    code: str
    emergency: str
    lines: tuple[CrisisLine, ...]


@dataclass(frozen=True)
class CrisisTable:
    countries: dict[str, Country]
    language_country: dict[str, str]
    texts: dict[str, dict[str, str]]
    fallback: str

    def country(self, region: str | None = None, locale: str | None = None, language: str | None = None) -> Country:
        """The user's country: the region setting if it names a country, else the locale's region, else the
        country of ``language`` (or of the locale's language, or English)."""
        for candidate in (region, Locale.parse(locale).region):
            code = (candidate or "").split("-")[0].upper()
            if code in self.countries:
                return self.countries[code]
        lang = language if language in self.language_country else Locale.parse(locale).language or DEFAULT
        return self.countries[self.language_country[lang]]

    def text(self, language: str | None = None, region: str | None = None, locale: str | None = None) -> str:
        """The crisis message for a user: in ``language`` (the message's; else the locale's, else English), with
        the lines of their country."""
        lang = language if language in self.texts else Locale.parse(locale).language or DEFAULT
        words = self.texts[lang]
        country = self.country(region, locale, language)
        rows = [words["intro"], f"- {words['emergency'].format(number=country.emergency)}"]
        rows += [
            f"- {line.name}: {line.number} ({', '.join(filter(None, (line.how, line.hours)))})"
            for line in country.lines
        ]
        rows += [f"- {words['elsewhere'].format(fallback=self.fallback)}", words["outro"]]
        return "\n".join(rows)


def parse_table(data: dict[str, Any]) -> CrisisTable:
    """Validate the crisis table; ``ValueError`` naming the place if anything is missing or malformed."""
    countries = {}
    raw = data.get("countries")
    if not isinstance(raw, dict) or not raw:
        raise ValueError("crisis_lines.json: countries must map country codes to entries")
    for code, entry in raw.items():
        where = f"crisis_lines.json: countries.{code}"
        if not _COUNTRY.fullmatch(code) or not isinstance(entry, dict):
            raise ValueError(f"{where}: an ISO 3166 alpha-2 code in upper case, with an entry")
        emergency = entry.get("emergency")
        if not isinstance(emergency, str) or not re.fullmatch(r"\d{2,4}", emergency):
            raise ValueError(f"{where}.emergency must be a short number")
        lines = []
        for i, line in enumerate(entry.get("lines", [])):
            if (
                not isinstance(line, dict)
                or set(line) != {*_LINE_FIELDS, "hours", "verified"}
                or not (line["hours"] is None or isinstance(line["hours"], str) and line["hours"].strip())
                or not all(isinstance(line[f], str) and line[f].strip() for f in _LINE_FIELDS)
                or not isinstance(line["verified"], bool)
                or sum(ch.isdigit() for ch in line["number"]) < 3
                or not line["source"].startswith("https://")
            ):
                raise ValueError(
                    f"{where}.lines[{i}] needs {', '.join(_LINE_FIELDS)} (https source), hours and verified"
                )
            lines.append(CrisisLine(**line))
        countries[code] = Country(code, emergency, tuple(lines))
    language_country = data.get("language_country")
    if not isinstance(language_country, dict) or set(language_country) != set(LANGUAGES):
        raise ValueError(f"crisis_lines.json: language_country must name every language of {LANGUAGES}")
    if not set(language_country.values()) <= set(countries):
        raise ValueError("crisis_lines.json: language_country names a country without an entry")
    texts = data.get("texts")
    if not isinstance(texts, dict) or set(texts) != set(LANGUAGES):
        raise ValueError(f"crisis_lines.json: texts must have every language of {LANGUAGES}")
    for lang, words in texts.items():
        if not isinstance(words, dict) or set(words) != set(_TEXT_FIELDS):
            raise ValueError(f"crisis_lines.json: texts.{lang} must have {', '.join(_TEXT_FIELDS)}")
        for field, placeholders in _TEXT_FIELDS.items():
            value = words[field]
            if (
                not isinstance(value, str)
                or not value.strip()
                or set(re.findall(r"\{\w+\}", value)) != set(placeholders)
            ):
                raise ValueError(
                    f"crisis_lines.json: texts.{lang}.{field} must be text with the placeholders {list(placeholders)}"
                )
    fallback = data.get("fallback")
    if not isinstance(fallback, str) or not fallback:
        raise ValueError("crisis_lines.json: fallback must name a directory of helplines")
    return CrisisTable(countries, language_country, texts, fallback)


@cache
def table() -> CrisisTable:
    """The shipped crisis table, validated once."""
    text = resources.files("upcoach.privacy").joinpath("data/crisis_lines.json").read_text("utf-8")
    return parse_table(json.loads(text))


def crisis_resources(language: str | None = None, region: str | None = None, locale: str | None = None) -> str:
    """The crisis message for a user who shows signs of self-harm (see ``CrisisTable.text``)."""
    return table().text(language, region, locale)
