"""Request features for routing: cheap, deterministic signals of how hard a request is (no model calls).

The complexity score in [0, 1] combines: length of the latest ask, how many things it asks for, whether it asks
to reason (compare, analyse, plan over weeks, weigh trade-offs), conversation depth, code, and language (the
small local model is weakest outside English). Each contributing signal is named so the decision can explain
itself: "complex (0.74): compares options, multi-week plan, 3 asks". The language is upcoach.language's guess, the
user's locale as its prior; a message that may be in two languages is read with both languages' tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from upcoach import language as lang_id
from upcoach.langtables import Tables, bounded
from upcoach.llm.base import ChatMessage
from upcoach.security.textnorm import clean, fold_accents

_WORD = re.compile(r"\w+", re.UNICODE)
_BULLET = r"^\s*(?:[-*•]|\d+[.)])\s+"
_CODE = re.compile(r"```|\bdef \w+\(|\bfunction \w+\(|\bselect \w+ from\b|;[ \t]*$|\{\s*\"", re.M)
_CODE_HINTS = ("```", "(", "{", ";")


@dataclass(frozen=True)
class _Reader:
    """The signals and ask separators of some languages, compiled together."""

    signals: tuple[tuple[str, float, re.Pattern[str]], ...]  # (name shown in reasons, weight, pattern)
    ask_split: re.Pattern[str]


@dataclass(frozen=True, eq=False)
class _Tables:
    # (name, weight, language -> its fragments joined); compiled per set of languages on first use
    signals: tuple[tuple[str, float, dict[str, str]], ...]
    separators: dict[str, str]  # language -> its ask separators joined
    languages: tuple[str, ...]  # the languages the file has tables for
    compile: Callable[[str, str, str], re.Pattern[str]]

    @lru_cache(maxsize=64)  # noqa: B019 - one instance, alive as long as the process
    def reader(self, languages: frozenset[str]) -> _Reader:
        """The tables for a text in ``languages``: only their fragments, so each search tries a few alternatives
        per position instead of every language's (the difference between ~15 and ~40 µs per message)."""
        pick = [lang for lang in self.languages if lang in languages]
        joined = [
            (name, weight, "|".join(bounded(lang, by_lang[lang]) for lang in pick))
            for name, weight, by_lang in self.signals
        ]
        signals = tuple((name, weight, self.compile(name, j, "(?:{})")) for name, weight, j in joined)
        separators = "|".join(bounded(lang, self.separators[lang]) for lang in pick)
        ask_split = self.compile("ask_separators", separators, r"(?m)[?]|(?:{})|" + _BULLET)
        return _Reader(signals, ask_split)


@cache
def tables() -> _Tables:
    """The signal and ask-separator tables (routing/data/complexity.json), validated once."""
    return parse_tables(Tables.load("upcoach.routing", "data/complexity.json").data)


def parse_tables(data: dict[str, Any]) -> _Tables:
    tables = Tables("complexity.json", data)
    weights = data.get("weights")
    if not isinstance(weights, dict) or not all(isinstance(w, int | float) for w in weights.values()):
        raise ValueError("complexity.json: weights must map each signal to a number")
    signals = []
    languages = tables.languages
    for name, by_lang in tables.table("signals", tuple(weights)).items():
        joined = {lang: tables.join(f"signals.{name}.{lang}", by_lang[lang]) for lang in languages}
        if not all(joined.values()):
            raise ValueError(f"complexity.json: signals.{name} needs fragments in every language")
        tables.compile(f"signals.{name}", "|".join(j for j in joined.values() if j))  # every fragment compiles
        signals.append((name, float(weights[name]), {lang: j for lang, j in joined.items() if j}))
    by_lang = tables.table("ask_separators", ("ask",))["ask"]
    separators = {lang: tables.join(f"ask_separators.ask.{lang}", by_lang[lang]) for lang in languages}
    if not all(separators.values()):
        raise ValueError("complexity.json: ask_separators.ask needs fragments in every language")
    return _Tables(
        tuple(signals),
        {lang: joined for lang, joined in separators.items() if joined},
        languages,
        lambda name, joined, template: tables.compile(name, joined, template),
    )


@dataclass(frozen=True)
class RequestFeatures:
    n_messages: int
    user_turns: int
    last_user_words: int
    total_chars: int
    est_prompt_tokens: int
    asks: int
    language: str
    has_code: bool
    signals: tuple[str, ...] = field(default_factory=tuple)
    complexity: float = 0.0

    def explain(self) -> str:
        parts = list(self.signals)
        if self.asks > 1:
            parts.append(f"{self.asks} asks")
        if self.last_user_words > 120:
            parts.append(f"{self.last_user_words} words")
        if self.user_turns > 6:
            parts.append(f"{self.user_turns} turns deep")
        if self.has_code:
            parts.append("code")
        if self.language != "en":
            parts.append(f"language {self.language}")
        return ", ".join(parts) if parts else "short single ask"


def _reader(languages: tuple[str, ...]) -> _Reader:
    """English and each language the message is written in (a message mixing two languages is read in both); a
    language without tables of its own is read with the English ones."""
    return tables().reader(frozenset(("en", *languages)))


def detect_language(text: str, locale: str | None = None) -> str:
    """The router's language: upcoach.language's, the one identifier of the app."""
    return lang_id.identify(text, locale)


def _count_asks(folded: str, reader: _Reader) -> int:
    return max(1, sum(1 for piece in reader.ask_split.split(folded) if piece and len(piece.split()) >= 3))


def count_asks(text: str, locale: str | None = None) -> int:
    return _count_asks(fold_accents(text.lower()), _reader(lang_id.likely(text, locale)))


def extract(messages: Sequence[ChatMessage], locale: str | None = None) -> RequestFeatures:
    """The features of a conversation; ``locale`` (the user's, a BCP 47 tag) is the prior of the language guess."""
    user_messages = [m.content for m in messages if m.role == "user"]
    last = user_messages[-1] if user_messages else (messages[-1].content if messages else "")
    total_chars = sum(len(m.content) for m in messages)
    lowered = clean(last)  # the shared normal form: invisible characters or look-alikes cannot dodge a signal
    folded = fold_accents(lowered)  # what the signal tables are written for
    word_list = _WORD.findall(lowered)
    words = len(word_list)
    languages = lang_id.likely(last, locale)
    language = languages[0]
    reader = _reader(languages)
    asks = _count_asks(folded, reader)
    has_code = any(hint in last for hint in _CODE_HINTS) and bool(_CODE.search(lowered))
    found = [(name, weight) for name, weight, pattern in reader.signals if pattern.search(folded)]
    signals = tuple(name for name, _ in found)

    score = 0.2 * min(1.0, words / 250)
    score += 0.15 * min(1.0, (asks - 1) / 3)
    score += sum(weight for _, weight in found)
    score += 0.1 * min(1.0, max(0, len(user_messages) - 1) / 8)
    score += 0.25 if has_code else 0.0
    score += 0.1 if language != "en" else 0.0
    return RequestFeatures(
        n_messages=len(messages),
        user_turns=len(user_messages),
        last_user_words=words,
        total_chars=total_chars,
        est_prompt_tokens=total_chars // 4 + 8 * len(messages),
        asks=asks,
        language=language,
        has_code=has_code,
        signals=signals,
        complexity=round(min(1.0, max(0.0, score)), 3),
    )
