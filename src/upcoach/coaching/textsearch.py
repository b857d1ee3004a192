"""How the strategies library's full-text search reads text, per language: one analyzer for both backends.

Text and query go through the same steps: lower case, cut into words (or, for Japanese, into overlapping character
pairs, since it has no spaces), drop the language's stop words, reduce each word to its Snowball stem (German
"Schlafen" and "schläft" meet at "schlaf") and fold accents ("estres" finds "estrés"). The rules per language are
data (``data/search_languages.json``). The database then only ranks the resulting terms: SQLite's FTS5 with its
plain ``unicode61`` tokenizer and PostgreSQL with the ``simple`` configuration, so both backends rank the same
terms the same way and a language PostgreSQL ships no configuration for (Polish, Hindi, Japanese) is stemmed too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import snowballstemmer

from upcoach.security.textnorm import fold_accents

DEFAULT_LANGUAGE = "en"
_WORD = re.compile(r"[^\W_]+")
_SEGMENTS = ("words", "bigrams")
_MEMO_WORDS = 100_000


@dataclass(frozen=True)
class Analyzer:
    language: str
    stopwords: frozenset[str]
    segment: str
    stemmer: snowballstemmer.stemmer | None
    _memo: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def words(self, text: str) -> list[str]:
        found: list[str] = []
        for token in _WORD.findall(text.lower()):
            if self.segment == "bigrams" and not token.isascii():
                found += [token] if len(token) == 1 else [token[i : i + 2] for i in range(len(token) - 1)]
            elif len(token) > 1 or token.isdigit():
                found.append(token)
        return found

    def terms(self, text: str) -> list[str]:
        """The terms full-text search indexes or looks up for ``text``, in order, repeats kept (they weigh)."""
        return [term for word in self.words(text) if word not in self.stopwords and (term := self.term(word))]

    def term(self, word: str) -> str:
        # Snowball in pure Python takes ~0.1 ms a word; a library has a few thousand distinct words, so each
        # word's term is worked out once per process (bounded: a query adds at most MAX_QUERY_TOKENS words).
        found = self._memo.get(word)
        if found is None:
            found = fold_accents(self.stemmer.stemWord(word) if self.stemmer is not None else word)
            if len(self._memo) < _MEMO_WORDS:
                self._memo[word] = found
        return found


def _load() -> dict[str, Analyzer]:
    data = json.loads(resources.files("upcoach.coaching").joinpath("data/search_languages.json").read_text("utf-8"))
    analyzers: dict[str, Analyzer] = {}
    for language, spec in data["languages"].items():
        if spec.get("segment") not in _SEGMENTS or not isinstance(spec.get("stopwords"), str):
            raise ValueError(f"search_languages.json: {language} needs a segment in {_SEGMENTS} and stopwords")
        name = spec.get("stemmer")
        stemmer = snowballstemmer.stemmer(name) if name else None
        analyzers[language] = Analyzer(language, frozenset(spec["stopwords"].split()), spec["segment"], stemmer)
    if DEFAULT_LANGUAGE not in analyzers:
        raise ValueError(f"search_languages.json: needs {DEFAULT_LANGUAGE}")
    return analyzers


@cache
def analyzers() -> dict[str, Analyzer]:
    return _load()


def base_language(locale: str | None) -> str:
    """``pt-BR`` -> ``pt``; a language without rules (or none) reads as English."""
    language = (locale or DEFAULT_LANGUAGE).split("-")[0].split("_")[0].lower()
    return language if language in analyzers() else DEFAULT_LANGUAGE


def analyze(text: str, language: str | None) -> list[str]:
    return analyzers()[base_language(language)].terms(text)


def document(text: str, language: str | None) -> str:
    """The indexed form of ``text``: its terms separated by spaces (what the database tokenizes)."""
    return " ".join(analyze(text, language))
