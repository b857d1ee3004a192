"""Request features for routing: cheap, deterministic signals of how hard a request is (no model calls).

The complexity score in [0, 1] combines: length of the latest ask, how many things it asks for, whether it asks
to reason (compare, analyse, plan over weeks, weigh trade-offs), conversation depth, code, and language (the
small local model is weakest outside English). Each contributing signal is named so the decision can explain
itself: "complex (0.74): compares options, multi-week plan, 3 asks".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from upcoach.llm.base import ChatMessage
from upcoach.security.textnorm import clean

_WORD = re.compile(r"\w+", re.UNICODE)
_ASK_SPLIT = re.compile(r"[?]|\b(?:and also|also|then|plus|additionally)\b|^\s*(?:[-*•]|\d+[.)])\s+", re.M)

# Each reasoning signal: (name shown in reasons, weight, pattern). Multilingual where it is cheap to be.
_SIGNALS: tuple[tuple[str, float, re.Pattern[str]], ...] = (
    (
        "compares options",
        0.25,
        re.compile(
            r"\b(compar\w*|versus|vs\.?|pros and cons|trade-?offs?|which is better|differences? between|"
            r"vergleich\w*|comparer|compara\w*|confront\w*)\b",
        ),
    ),
    (
        "multi-step plan",
        0.25,
        re.compile(
            r"\b(\d+|two|three|four|six|eight|twelve|multi)[- ]?(week|month|day|phase|step)s?\b|"
            r"\b(roadmap|curriculum|schedule|week[- ]by[- ]week|milestones?|action plan|training plan|"
            r"wochenplan|plan d'action|plan de \w+|piano di \w+)\b",
        ),
    ),
    (
        "asks for analysis",
        0.2,
        re.compile(
            r"\b(analy[sz]\w*|evaluat\w*|assess\w*|in depth|in detail|detailed|step[- ]by[- ]step|"
            r"root cause|strateg\w*|framework\w*|reason\w* through|justify|critique|prioriti[sz]\w*|"
            r"analysier\w*|analyse[rz]?|analizz\w*|analisa\w*|estrategi\w*)\b",
        ),
    ),
    (
        "several items",
        0.1,
        re.compile(r"\b(?:several|multiple|various|(?:each|all|list) of|\d{1,2} (?:ways|options|ideas|frameworks))\b"),
    ),
)
_CODE = re.compile(r"```|\bdef \w+\(|\bfunction \w+\(|\bselect \w+ from\b|;[ \t]*$|\{\s*\"", re.M)
_CODE_HINTS = ("```", "(", "{", ";")
# Common function words per language: enough to tell English from the rest, no model needed.
# Signals are matched on the lower-cased text, so the patterns need no (slow) IGNORECASE.
_STOPWORDS = {
    "en": {"the", "and", "to", "of", "is", "i", "you", "how", "what", "my", "do", "a", "in", "for", "it"},
    "de": {"der", "die", "das", "und", "ich", "nicht", "ist", "wie", "mit", "ein", "eine", "zu", "mein"},
    "fr": {"le", "la", "les", "et", "je", "est", "pas", "comment", "une", "des", "pour", "mon", "que"},
    "es": {"el", "la", "los", "y", "yo", "es", "no", "cómo", "una", "para", "mi", "que", "por"},
    "it": {"il", "la", "e", "io", "è", "non", "come", "una", "per", "mio", "che", "di", "sono"},
    "pt": {"o", "a", "os", "e", "eu", "é", "não", "como", "uma", "para", "meu", "que", "do"},
}


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


_LANGS_OF_WORD: dict[str, tuple[str, ...]] = {}
for _lang, _words in _STOPWORDS.items():
    for _word in _words:
        _LANGS_OF_WORD[_word] = (*_LANGS_OF_WORD.get(_word, ()), _lang)


def detect_language(text: str, words: list[str] | None = None) -> str:
    words = words if words is not None else _WORD.findall(text.lower())
    if not words:
        return "en"
    scores = dict.fromkeys(_STOPWORDS, 0)
    for word in words:
        for lang in _LANGS_OF_WORD.get(word, ()):
            scores[lang] += 1
    best = max(scores, key=lambda lang: scores[lang])
    # Ties and no evidence read as English: the default audience and the local model's best language.
    return best if scores[best] > scores["en"] else "en"


def count_asks(text: str) -> int:
    pieces = [p for p in _ASK_SPLIT.split(text) if p and len(p.split()) >= 3]
    return max(1, len(pieces))


def extract(messages: Sequence[ChatMessage]) -> RequestFeatures:
    user_messages = [m.content for m in messages if m.role == "user"]
    last = user_messages[-1] if user_messages else (messages[-1].content if messages else "")
    total_chars = sum(len(m.content) for m in messages)
    lowered = clean(last)  # the shared normal form: invisible characters or look-alikes cannot dodge a signal
    word_list = _WORD.findall(lowered)
    words = len(word_list)
    asks = count_asks(lowered)
    language = detect_language(lowered, word_list)
    has_code = any(hint in last for hint in _CODE_HINTS) and bool(_CODE.search(lowered))
    signals = tuple(name for name, _, pattern in _SIGNALS if pattern.search(lowered))

    score = 0.2 * min(1.0, words / 250)
    score += 0.15 * min(1.0, (asks - 1) / 3)
    score += sum(weight for name, weight, _ in _SIGNALS if name in signals)
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
        complexity=round(min(1.0, score), 3),
    )
