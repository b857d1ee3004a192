"""The one language identifier: which supported language a message is written in, with the user's locale as a prior.

Every reader of text that depends on the language (the router's complexity signals, the journal's sentiment, the
crisis resources) asks ``identify``; nothing else guesses. The model is py3langid's naive Bayes over byte n-grams
(langid.py's model, maintained and faster), restricted to the supported languages, so a short message is never
filed under a language the product does not serve. It was chosen over lingua on short messages (figures and the
command in docs/languages.md): as accurate on our set once the locale prior is applied, about 3.5 times faster per
message, pure Python and numpy, and a 4.5 MB package instead of 96 MB.

The locale prior: the identifier's probabilities are multiplied by ``LOCALE_PRIOR`` for the locale's language and
renormalised. A message that plainly reads as another language keeps it ("Ich bin müde" from an en-US user is
German); a short or ambiguous one ("ok", "no", "taxi", "hola amigo") goes to the language the user chose. Text with
no letters reads as the locale's language, or English without a locale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier

# The supported languages, in the order tables list them. A regional variant (pt-BR, es-MX, en-GB) is a locale of one.
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "tr", "ar", "hi", "ja")
DEFAULT = "en"
# How much more likely the locale's language is before reading the text: odds of 4:1 let three or four words of
# another language win over it, and leave a one-word message in the user's language.
LOCALE_PRIOR = 4.0
# Languages written without spaces between words: a phrase rule cannot be anchored on word boundaries there.
UNSPACED = frozenset({"ja"})

DEFAULT_PRIOR = 2.0
_SENTENCE = re.compile(r"[.!?;:\n。！？]+")
_MIN_SENTENCE = 12  # shorter pieces ("ok.", "Hi!") say too little to add a language
_SCRIPTS = (
    (("ar",), re.compile(r"[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")),
    (("hi",), re.compile(r"[\u0900-\u097f]")),
    (("ja",), re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff66-\uff9f]")),
)
_LATIN = re.compile(r"[a-zA-Z\u00c0-\u024f]")
_LATIN_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "tr")
LOCALE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$"
_LOCALE = re.compile(LOCALE_PATTERN)


@dataclass(frozen=True)
class Locale:
    """A parsed BCP 47 tag, only as far as we use it: language and region (``pt-BR`` -> pt, BR)."""

    language: str | None  # a supported language, or None
    region: str | None  # an ISO 3166 alpha-2 code in upper case, or None

    @classmethod
    def parse(cls, tag: str | None) -> Locale:
        if not tag or not _LOCALE.match(tag):
            return cls(None, None)
        parts = tag.replace("_", "-").split("-")
        language = parts[0].lower()
        region = next((p.upper() for p in parts[1:] if len(p) == 2 and p.isalpha()), None)
        return cls(language if language in LANGUAGES else None, region)


@cache
def _identifier() -> LanguageIdentifier:
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def written_in(text: str) -> frozenset[str]:
    """The languages whose script ``text``'s letters are written in (Latin letters: every Latin-script language)."""
    found: set[str] = set()
    for script, pattern in _SCRIPTS:
        if pattern.search(text):
            found.update(script)
    if _LATIN.search(text):
        found.update(_LATIN_LANGUAGES)
    return frozenset(found)


def probabilities(text: str, locale: str | None = None) -> dict[str, float]:
    """Each candidate language's probability for ``text`` after the prior; empty if ``text`` has no letters.

    Candidates are the languages written in the text's scripts (Latin letters are never Arabic, kana never Hindi);
    the prior is the locale's language (odds ``LOCALE_PRIOR``), else English (odds ``DEFAULT_PRIOR``)."""
    candidates = written_in(text)
    if not candidates:
        return {}
    scores = {lang: p for lang, p in _identifier().rank(text) if lang in candidates}
    prior = Locale.parse(locale).language
    if prior in scores:
        scores[prior] *= LOCALE_PRIOR
    elif prior is None and DEFAULT in scores:
        scores[DEFAULT] *= DEFAULT_PRIOR
    total = sum(scores.values())
    if total <= 0:
        return {}
    return {lang: score / total for lang, score in scores.items()}


def identify(text: str, locale: str | None = None) -> str:
    """The supported language ``text`` is most likely written in, ``locale`` (a BCP 47 tag) weighing as a prior."""
    scores = probabilities(text, locale)
    if not scores:
        return Locale.parse(locale).language or DEFAULT
    return max(scores, key=scores.__getitem__)


def likely(text: str, locale: str | None = None) -> tuple[str, ...]:
    """The languages ``text`` is written in, likeliest first: each sentence's, so a message that mixes two
    languages ("Can you help? Ich weiß nicht weiter.") is read in both."""
    found = [identify(text, locale)]
    for sentence in _SENTENCE.split(text):
        if len(sentence) >= _MIN_SENTENCE and (lang := identify(sentence, locale)) not in found:
            found.append(lang)
    return tuple(found)
