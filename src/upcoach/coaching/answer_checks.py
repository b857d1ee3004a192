"""Checks on a coaching answer before the user sees it: code nobody asked for, a repeated sentence or loop, a
refusal of an ordinary request, drift off the topic asked about, and a short list of plainly unsafe advice.

The rules are data (``data/answer_checks.json``); this module only applies them. ``AnswerWatch`` follows one
answer as it streams: ``feed`` takes each piece and checks only what the piece completed (whole sentences), so a
piece costs a few regex searches over one sentence (well under a millisecond); ``finish`` checks the tail.
``check_answer`` is the same verdict on a whole answer (the quality harness uses it).

What the checks cannot see: whether advice is good, only whether it is one of the listed failures. Off-topic drift
is judged by shared words with the question (and the strategies given as material), so an answer that keeps the
question's words while drifting passes; the harness's must/must-not phrases measure the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from upcoach.coaching.strategies import query_tokens
from upcoach.security.textnorm import fold_accents

CHECKS = ("unrequested_code", "repetition", "refusal", "off_topic", "unsafe_advice")
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n+")
_WORD = re.compile(r"[^\W_]+")
_STEM = 5  # words compared on their first letters: "hydrate"/"hydration", "phones"/"phone"


@dataclass(frozen=True)
class _Rules:
    refusal: re.Pattern[str]
    code: re.Pattern[str]
    request_code: re.Pattern[str]
    unsafe: tuple[tuple[str, re.Pattern[str]], ...]
    off_topic: dict[str, int]
    repetition: dict[str, int]


def _compile(name: str, patterns: list[str]) -> re.Pattern[str]:
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"answer_checks.json: {name}: {exc}") from None


@cache
def rules() -> _Rules:
    """The rule tables, compiled once; a malformed file raises ValueError (the app refuses to start)."""
    data: dict[str, Any] = json.loads(
        resources.files("upcoach.coaching").joinpath("data/answer_checks.json").read_text("utf-8")
    )
    unsafe = tuple((key, _compile(f"unsafe.{key}", [p])) for key, p in data["unsafe"].items())
    return _Rules(
        refusal=_compile("refusal", data["refusal"]),
        code=_compile("code", data["code"]),
        request_code=_compile("request_code", data["request_code"]),
        unsafe=unsafe,
        off_topic={k: int(v) for k, v in data["off_topic"].items()},
        repetition={k: int(v) for k, v in data["repetition"].items()},
    )


def _stems(text: str) -> set[str]:
    return {token[:_STEM] for token in query_tokens(fold_accents(text.lower())) if len(token) >= 4}


@dataclass(frozen=True)
class Failure:
    check: str  # one of CHECKS
    detail: str  # which rule, for routing.reasons and the harness

    def __str__(self) -> str:
        return f"{self.check} ({self.detail})"


@dataclass
class AnswerWatch:
    """One answer, checked sentence by sentence as it arrives.

    ``question`` is the user's last message; ``topic`` extra on-topic words (titles of the strategies given as
    material). Code is allowed when the question asks for it."""

    question: str
    topic: str = ""
    failures: list[Failure] = field(default_factory=list)
    _pending: str = ""
    _seen: set[str] = field(default_factory=set)
    _ngrams: dict[tuple[str, ...], int] = field(default_factory=dict)
    _words: list[str] = field(default_factory=list)
    _on_topic: bool = False
    _sentences: int = 0

    def __post_init__(self) -> None:
        self._rules = rules()
        folded = fold_accents(self.question.lower())
        self._code_ok = bool(self._rules.request_code.search(folded))
        self._question_stems = _stems(self.question)
        self._topic_stems = self._question_stems | _stems(self.topic)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def pending(self) -> str:
        """The text after the last complete sentence: not checked yet."""
        return self._pending

    @property
    def sentences(self) -> int:
        return self._sentences

    def feed(self, piece: str) -> list[Failure]:
        """Add streamed text; returns the failures found in what it completed (empty: fine so far)."""
        self._pending += piece
        parts = _SENTENCE_END.split(self._pending)
        if len(parts) == 1:
            # A code fence or a refusal can show before its sentence ends.
            return self._check_partial(self._pending)
        self._pending = parts[-1]
        found: list[Failure] = []
        for sentence in parts[:-1]:
            found += self._check_sentence(sentence)
        return found + self._check_partial(self._pending)

    def finish(self) -> list[Failure]:
        """The end of the answer: check the last sentence and the answer as a whole (drift needs all of it)."""
        found = self._check_sentence(self._pending) if self._pending.strip() else []
        self._pending = ""
        found += self._check_topic(final=True)
        return found

    # ---- the checks ----------------------------------------------------------------------------------------------
    def _fail(self, check: str, detail: str) -> list[Failure]:
        if any(f.check == check for f in self.failures):
            return []
        failure = Failure(check, detail)
        self.failures.append(failure)
        return [failure]

    def _check_partial(self, text: str) -> list[Failure]:
        if "```" in text and not self._code_ok:
            return self._fail("unrequested_code", "code block")
        return []

    def _check_sentence(self, sentence: str) -> list[Failure]:
        sentence = sentence.strip()
        if not sentence:
            return []
        folded = fold_accents(sentence.lower())
        self._sentences += 1
        found: list[Failure] = []
        if self._rules.refusal.search(folded):
            found += self._fail("refusal", "refused an ordinary request")
        if not self._code_ok and self._rules.code.search(folded):
            found += self._fail("unrequested_code", "code nobody asked for")
        for name, pattern in self._rules.unsafe:
            if pattern.search(folded):
                found += self._fail("unsafe_advice", name)
                break
        found += self._check_repetition(folded)
        found += self._check_topic(final=False)
        return found

    def _check_repetition(self, folded: str) -> list[Failure]:
        words = _WORD.findall(folded)
        limits = self._rules.repetition
        key = " ".join(w for w in words if not w.isdigit())  # "1. Drink water" and "4. Drink water" are one sentence
        if len(words) >= limits["min_sentence_words"]:
            if key in self._seen:
                return self._fail("repetition", "a sentence said twice")
            self._seen.add(key)
        n = limits["ngram_words"]
        self._words += words
        found: list[Failure] = []
        start = max(0, len(self._words) - len(words) - n + 1)
        for i in range(start, len(self._words) - n + 1):
            gram = tuple(self._words[i : i + n])
            self._ngrams[gram] = self._ngrams.get(gram, 0) + 1
            if self._ngrams[gram] >= limits["ngram_repeats"]:
                found = self._fail("repetition", "a phrase in a loop")
        return found

    def _check_topic(self, *, final: bool) -> list[Failure]:
        if self._on_topic or len(self._question_stems) < self._rules.off_topic["min_question_terms"]:
            return []
        stems = {w[:_STEM] for w in self._words if len(w) >= 4}
        if stems & self._topic_stems:
            self._on_topic = True
            return []
        if len(self._words) >= self._rules.off_topic["min_answer_words"] or (final and len(self._words) >= 20):
            return self._fail("off_topic", "shares no word with the question")
        return []


def check_answer(answer: str, question: str, topic: str = "") -> list[Failure]:
    """Every failure of a whole answer (one per check)."""
    watch = AnswerWatch(question, topic)
    watch.feed(answer)
    watch.finish()
    return list(watch.failures)
