"""Sentiment of journal transcripts, computed locally with VADER (a rule-based lexicon model, no network).

VADER's lexicon and rules are English only. Text in any other language would score close to neutral for the wrong
reason, so it is labelled ``unsupported`` with no score rather than guessed. Whether a text is English is itself
a small heuristic: very common English function words must make up a fair share of its words and outnumber the
function words of the Latin-script languages most easily mistaken for English (every English sentence of any
length has some; other languages rarely do). Mixed-language text counts as its majority.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

Language = Literal["en", "unsupported"]
Label = Literal["positive", "negative", "neutral"]

# VADER's own recommended thresholds on the compound score.
POSITIVE_AT = 0.05
NEGATIVE_AT = -0.05
MIN_ENGLISH_SHARE = 0.12

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the and or but so if then than because when while of to in on at for with from by about into over after "
    "before i me my mine we us our you your he him his she her it its they them their this that these those is am "
    "are was were be been being have has had do does did not no can could will would should shall may might must "
    "just very really too also what which who how why there here all some any more most much many i'm it's don't "
    "didn't can't i've i'd i'll".split()
)
# Function words of the languages most often mistaken for English by the share test (Spanish, French, German,
# Italian, Portuguese, Dutch); words that are also English ("me", "a", "in") are left out.
_OTHER_FUNCTION_WORDS = (
    frozenset(
        "el la los las un una y o pero que de del en con por para mi mis tu su muy es son estoy estaba hoy yo no "
        "le les et ou mais je tu il elle nous vous ils est sont avec pour dans sur très mon ma mes ce cette "
        "der das und oder aber ich du er sie wir ist sind mit für auf sehr mein meine nicht ein eine heute "
        "il lo gli e ma io sono con per molto mio oggi non "
        "os um uma eu ele ela com muito meu minha hoje não "
        "de het een en maar ik jij hij zij wij niet met voor op zeer mijn vandaag".split()
    )
    - _ENGLISH_FUNCTION_WORDS
)


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


def _short(words: list[str]) -> Language:
    # Too short to judge by shares: one common English word, or a word of VADER's lexicon, is enough.
    english = any(word in _ENGLISH_FUNCTION_WORDS or word in _analyzer().lexicon for word in words)
    return "en" if english else "unsupported"


def detect_language(text: str) -> Language:
    words = [word.lower() for word in _WORD.findall(text)]
    if not words:
        return "unsupported"
    if sum(not word.isascii() for word in words) / len(words) > 0.2:
        return "unsupported"
    common = sum(word in _ENGLISH_FUNCTION_WORDS for word in words)
    other = sum(word in _OTHER_FUNCTION_WORDS for word in words)
    if len(words) <= 3 and not other:
        return _short(words)
    if other >= common:
        return "unsupported"
    return "en" if common / len(words) >= MIN_ENGLISH_SHARE else "unsupported"


def analyse(text: str) -> Sentiment:
    if detect_language(text) != "en":
        return Sentiment("unsupported", None, None)
    compound = float(_analyzer().polarity_scores(text)["compound"])
    label: Label = "positive" if compound >= POSITIVE_AT else "negative" if compound <= NEGATIVE_AT else "neutral"
    return Sentiment("en", compound, label)
