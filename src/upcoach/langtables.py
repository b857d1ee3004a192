"""Phrase tables per language, kept as JSON data beside the module that reads them: one schema, checked once.

A table maps a name to one list of regex fragments per supported language (every language present, a list
possibly empty). Fragments are written for the normalised text (textnorm.clean, then fold_accents: lower case, no
diacritics), may name a macro of the file as ``{NAME}``, and are joined with ``|`` into one pattern, anchored on word
boundaries. Used by privacy/special_category.py and routing/features.py; a malformed file raises ``ValueError``
naming the place, so the app refuses to start instead of misreading text.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

LANGUAGES = ("en", "de", "fr", "es", "it", "pt")
_MACRO = re.compile(r"\{[A-Z_]+\}")


class Tables:
    """One JSON file of phrase tables: its name (for error messages), its data and its macros."""

    def __init__(self, name: str, data: dict[str, Any]) -> None:
        self.name = name
        self.data = data
        if tuple(data.get("languages", ())) != LANGUAGES:
            raise ValueError(f"{name}: languages must be {LANGUAGES}")
        macros = data.get("macros", {})
        if not isinstance(macros, dict) or not all(isinstance(v, str) for v in macros.values()):
            raise ValueError(f"{name}: macros must map names to patterns")
        self.macros: dict[str, str] = macros

    @classmethod
    def load(cls, package: str, path: str) -> Tables:
        return cls(path.rsplit("/", 1)[-1], json.loads(resources.files(package).joinpath(path).read_text("utf-8")))

    def table(self, key: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """``data[key]``, which must name exactly ``names``, each with exactly the supported languages."""
        table = self.data.get(key)
        if not isinstance(table, dict) or set(table) != set(names):
            raise ValueError(f"{self.name}: {key} must name exactly {', '.join(names)}")
        for name, by_lang in table.items():
            if not isinstance(by_lang, dict) or set(by_lang) != set(LANGUAGES):
                raise ValueError(f"{self.name}: {key}.{name} must have exactly the languages {LANGUAGES}")
        return table

    def join(self, where: str, fragments: object) -> str | None:
        """The fragments joined with ``|`` and macros expanded; None for an empty list."""
        if not isinstance(fragments, list) or not all(isinstance(f, str) and f for f in fragments):
            raise ValueError(f"{self.name}: {where} must be a list of non-empty strings")
        if not fragments:
            return None
        joined = "|".join(fragments)
        for name, value in self.macros.items():
            joined = joined.replace("{" + name + "}", value)
        if _MACRO.search(joined):
            raise ValueError(f"{self.name}: {where} names an unknown macro")
        return joined

    def join_languages(self, where: str, by_lang: dict[str, Any]) -> str:
        """Every language's fragments in one alternation (text in any language is read with all of them)."""
        parts = [self.join(f"{where}.{lang}", by_lang[lang]) for lang in LANGUAGES]
        if not any(parts):
            raise ValueError(f"{self.name}: {where} has no fragment in any language")
        return "|".join(part for part in parts if part)

    def compile(self, where: str, joined: str, template: str = r"\b(?:{})\b") -> re.Pattern[str]:
        try:
            return re.compile(template.format(joined))
        except re.error as exc:
            raise ValueError(f"{self.name}: {where} is not a valid pattern: {exc}") from exc
