"""Special-category data (GDPR art. 9) and signs of self-harm, found with multilingual phrase rules.

A request that mentions any category here stays on the local model; one that shows signs of self-harm also gets
`CRISIS_RESOURCES`. Rules cover English, German, French, Spanish, Italian and Portuguese; they are data
(privacy/data/special_category.json, one schema, loaded and validated once by ``rules()``). Text goes through the
shared normaliser first (security/textnorm.py: invisible characters, look-alike letters, NFKC, case, whitespace)
and is stripped of accents (so "depressão", "depressao", "DEPRESSÃO" and "dep\u00adression" are one word), and
every rule is anchored on word boundaries with explicit inflections (`depress\\w*`, `schwanger\\w*`).

Where the line is drawn (the product keeps ordinary wellness coaching routable):
- special: diagnoses, symptoms of a condition, treatment, therapy, medication, disability, pregnancy and fertility,
  sex life, sexual orientation and gender identity (transgender is filed under "sexual_orientation", the closest
  art. 9 heading), religious practice or belief, party politics and votes, union membership, ethnic origin and
  racism, genetic tests, biometric identification;
- not special: wanting to sleep better, drink more water, eat healthier, lose weight, get fitter, stress, nerves
  before a talk ("I'm anxious about tomorrow"), feeling tired or unmotivated, burnout talked about as workload,
  office politics, maternity or parental leave as an HR topic, idioms ("this deadline is killing me", "I could kill
  for a coffee", "career suicide", "thank God").
Clinical framing moves a topic across the line: "anxiety disorder", "my anxiety", "therapy for burnout".
Self-harm rules look for intent about oneself ("I want to kill myself", "no reason to live", "je veux mourir") and
skip injuries and idioms ("I hurt myself at the gym", "killing myself trying to hit this deadline"). Self-harm is
mental-health data too, so it always adds "mental_health". Negation is not parsed: "I don't have diabetes" still
mentions a diagnosis and stays local, which is the fail-closed choice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from upcoach.security.textnorm import clean, fold_accents

CATEGORIES = (
    "health",
    "mental_health",
    "medication",
    "pregnancy",
    "sex_life",
    "sexual_orientation",
    "religion",
    "political_opinion",
    "union_membership",
    "ethnic_origin",
    "genetic",
    "biometric",
)

CRISIS_RESOURCES = """\
It sounds like you are carrying something very heavy, and I'm glad you said it. You don't have to face this alone:
please reach out to someone who can be with you right now.
- In immediate danger: call your local emergency number (112 in Europe, 911 in the US and Canada).
- US: call or text 988 (Suicide & Crisis Lifeline).
- UK and Ireland: Samaritans, 116 123 (free, day and night).
- Germany: TelefonSeelsorge, 0800 111 0 111 or 0800 111 0 222 (free, day and night).
- France: 3114 (numéro national de prévention du suicide).
- Spain: 024 (línea de atención a la conducta suicida).
- Anywhere else: findahelpline.com lists free, confidential helplines by country.
If you can, tell someone you trust how you are feeling today. I'm here to keep talking with you too.
"""


@dataclass(frozen=True)
class SpecialCategoryResult:
    categories: tuple[str, ...]
    self_harm: bool
    matches: tuple[str, ...]  # rule names ("health.de", "clinical.en"), never the user's words


_LANGUAGES = ("en", "de", "fr", "es", "it", "pt")
# Rule tables besides the art. 9 categories: intent about oneself, and generic medical words.
_EXTRA_TABLES = ("self_harm", "clinical")


@dataclass(frozen=True)
class _Rules:
    rules: tuple[tuple[str, str, re.Pattern[str]], ...]  # (name "category.lang", category, pattern)
    idioms: re.Pattern[str]


def _expand(fragment: str, macros: dict[str, str]) -> str:
    for name, value in macros.items():
        fragment = fragment.replace("{" + name + "}", value)
    return fragment


def _compile(where: str, fragments: object, macros: dict[str, str]) -> re.Pattern[str] | None:
    if not isinstance(fragments, list) or not all(isinstance(f, str) and f for f in fragments):
        raise ValueError(f"special_category.json: {where} must be a list of non-empty strings")
    if not fragments:
        return None
    joined = "|".join(_expand(f, macros) for f in fragments)
    if re.search(r"\{[A-Z_]+\}", joined):
        raise ValueError(f"special_category.json: {where} names an unknown macro")
    try:
        return re.compile(r"\b(?:" + joined + r")\b")
    except re.error as exc:
        raise ValueError(f"special_category.json: {where} is not a valid pattern: {exc}") from exc


def _table(data: dict[str, Any], key: str, names: tuple[str, ...]) -> dict[str, dict[str, object]]:
    table = data.get(key)
    if not isinstance(table, dict) or set(table) != set(names):
        raise ValueError(f"special_category.json: {key} must name exactly {', '.join(names)}")
    for name, by_lang in table.items():
        if not isinstance(by_lang, dict) or set(by_lang) != set(_LANGUAGES):
            raise ValueError(f"special_category.json: {key}.{name} must have exactly the languages {_LANGUAGES}")
    return table


@cache
def rules() -> _Rules:
    """The rule tables (privacy/data/special_category.json), loaded and validated once; ValueError if malformed."""
    return parse_rules(
        json.loads(resources.files("upcoach.privacy").joinpath("data/special_category.json").read_text("utf-8"))
    )


def parse_rules(data: dict[str, Any]) -> _Rules:
    """Validate and compile the tables: every table names every language, every pattern compiles."""
    if tuple(data.get("languages", ())) != _LANGUAGES:
        raise ValueError(f"special_category.json: languages must be {_LANGUAGES}")
    macros = data.get("macros", {})
    if not isinstance(macros, dict) or not all(isinstance(v, str) for v in macros.values()):
        raise ValueError("special_category.json: macros must map names to patterns")
    categories = _table(data, "categories", _EXTRA_TABLES + CATEGORIES)
    compiled = []
    for category, by_lang in categories.items():
        for lang, fragments in by_lang.items():
            pattern = _compile(f"categories.{category}.{lang}", fragments, macros)
            if pattern is not None:
                compiled.append((f"{category}.{lang}", category, pattern))
    idioms = _compile("idioms", data.get("idioms"), macros)
    if idioms is None:
        raise ValueError("special_category.json: idioms must not be empty")
    return _Rules(tuple(compiled), idioms)


_MEDICAL = frozenset(("health", "mental_health", "medication", "pregnancy", "sex_life", "genetic", "self_harm"))


def detect_special_categories(text: str) -> SpecialCategoryResult:
    # The shared normaliser first (invisibles, look-alikes, NFKC, case, whitespace): "H\u200bIV" is "hiv" here.
    tables = rules()
    normalised = tables.idioms.sub(" ", fold_accents(clean(text)))
    categories: set[str] = set()
    matches: list[str] = []
    for name, category, pattern in tables.rules:
        if pattern.search(normalised):
            matches.append(name)
            categories.add(category)
    if "clinical" in categories:
        categories.discard("clinical")
        if not categories & _MEDICAL:
            categories.add("health")
    self_harm = "self_harm" in categories
    if self_harm:
        categories.discard("self_harm")
        categories.add("mental_health")
    return SpecialCategoryResult(
        categories=tuple(c for c in CATEGORIES if c in categories),
        self_harm=self_harm,
        matches=tuple(matches),
    )
