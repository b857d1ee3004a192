"""Phrase tables per language, kept as JSON data beside the module that reads them: one schema, checked once.

A file lists the languages it covers (``languages``: English and any of the supported ones, upcoach/language.py),
and each of its tables maps a name to one list of regex fragments per language of the file (every one present, a
list possibly empty): a language is added by adding its data. Fragments are written in lower case as the language
is written (accents, Devanagari, kana); they are folded like the text they read (textnorm.clean, then
fold_accents), may name a macro of the file as ``{NAME}``, and are joined with ``|`` into one pattern, anchored on
word boundaries in languages that put spaces between words (not in Japanese). Used by privacy/special_category.py
and routing/features.py; a malformed file raises ``ValueError`` naming the place, so the app refuses to start
instead of misreading text.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from upcoach.language import LANGUAGES, UNSPACED
from upcoach.security.textnorm import fold_accents

_MACRO = re.compile(r"\{[A-Z_]+\}")


class Tables:
    """One JSON file of phrase tables: its name (for error messages), its data and its macros."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = data
        languages = data.get("languages")
        if (
            not isinstance(languages, list)
            or "en" not in languages
            or len(set(languages)) != len(languages)
            or not set(languages) <= set(LANGUAGES)
        ):
            raise ValueError(f"{name}: languages must be a list of distinct codes among {LANGUAGES}, with en")
        self.languages: tuple[str, ...] = tuple(lang for lang in LANGUAGES if lang in languages)
        macros = data.get("macros", {})
        if not isinstance(macros, dict) or not all(isinstance(v, str) for v in macros.values()):
            raise ValueError(f"{name}: macros must map names to patterns")
        self.macros: dict[str, str] = {key: fold_accents(value) for key, value in macros.items()}

    @classmethod
    def load(cls, package: str, path: str) -> Tables:
        return cls(path.rsplit("/", 1)[-1], json.loads(resources.files(package).joinpath(path).read_text("utf-8")))

    def table(self, key: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """``data[key]``, which must name exactly ``names``, each with exactly the file's languages."""
        table = self.data.get(key)
        if not isinstance(table, dict) or set(table) != set(names):
            raise ValueError(f"{self.name}: {key} must name exactly {', '.join(names)}")
        for name, by_lang in table.items():
            if not isinstance(by_lang, dict) or set(by_lang) != set(self.languages):
                raise ValueError(f"{self.name}: {key}.{name} must have exactly the languages {self.languages}")
        return table

    def join(self, where: str, fragments: object) -> str | None:
        """The fragments joined with ``|`` and macros expanded; None for an empty list."""
        if not isinstance(fragments, list) or not all(isinstance(f, str) and f for f in fragments):
            raise ValueError(f"{self.name}: {where} must be a list of non-empty strings")
        if not fragments:
            return None
        joined = fold_accents("|".join(fragments))
        for name, value in self.macros.items():
            joined = joined.replace("{" + name + "}", value)
        if _MACRO.search(joined):
            raise ValueError(f"{self.name}: {where} names an unknown macro")
        return joined

    def join_languages(self, where: str, by_lang: dict[str, Any], right: bool = True) -> str:
        """Every language's fragments in one alternation, each anchored as its language allows (text in any
        language is read with all of them); compile it with ``template="(?:{})..."``. ``right=False`` leaves the
        end unanchored, for a pattern that goes on after the fragment."""
        parts = []
        for lang in self.languages:
            joined = self.join(f"{where}.{lang}", by_lang[lang])
            if joined is not None:
                parts.append(bounded(lang, joined, right))
        if not parts:
            raise ValueError(f"{self.name}: {where} has no fragment in any language")
        return "|".join(parts)

    def compile(self, where: str, joined: str, template: str = r"\b(?:{})\b") -> re.Pattern[str]:
        try:
            return re.compile(template.format(joined))
        except re.error as exc:
            raise ValueError(f"{self.name}: {where} is not a valid pattern: {exc}") from exc


# Where a word starts and ends, per script: \b, except in Devanagari, whose vowel signs are not \w (so \b would fall
# inside "मरना"), and in Japanese, which has no spaces between words.
_DEVANAGARI_EDGES = (r"(?<![\w\u0900-\u0963\u0966-\u097f])", r"(?![\w\u0900-\u0963\u0966-\u097f])")  # not the dandas
_EDGES = {"hi": _DEVANAGARI_EDGES, **{lang: ("", "") for lang in UNSPACED}}


def bounded(lang: str, joined: str, right: bool = True) -> str:
    """``joined`` anchored on the word boundaries of ``lang``'s script (none in Japanese)."""
    left_edge, right_edge = _EDGES.get(lang, (r"\b", r"\b"))
    return f"{left_edge}(?:{joined})" + (right_edge if right else "")
