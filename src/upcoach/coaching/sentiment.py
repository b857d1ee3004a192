"""Sentiment of journal transcripts, computed locally with VADER (a rule-based lexicon model, no network).

VADER's lexicon and rules are English only. Text in any other language would score close to neutral for the wrong
reason, so it is labelled ``unsupported`` with no score rather than guessed. Whether a text is English is
upcoach.language's call (the app's one identifier; the journal knows no locale yet, so English is the prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from upcoach.language import identify

Language = Literal["en", "unsupported"]
Label = Literal["positive", "negative", "neutral"]

# VADER's own recommended thresholds on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05


@dataclass(frozen=True)
class Sentiment:
    language: Language
    compound: float | None
    label: Label | None

    def to_json(self) -> dict[str, object]:
        return {"language": self.language, "compound": self.compound, "label": self.label}


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


def detect_language(text: str, locale: str | None = None) -> Language:
    return "en" if identify(text, locale) == "en" else "unsupported"


def analyse(text: str, locale: str | None = None) -> Sentiment:
    if detect_language(text, locale) != "en":
        return Sentiment("unsupported", None, None)
    compound = float(_analyzer().polarity_scores(text)["compound"])
    label: Label = "positive" if compound >= POSITIVE_AT else "negative" if compound <= NEGATIVE_AT else "neutral"
    return Sentiment("en", compound, label)
