"""Special-category data (GDPR art. 9) and signs of self-harm, found with multilingual phrase rules.

A request that reveals any category here about a person stays on the local model; one that shows signs of self-harm
also gets the crisis resources of the user's country (privacy/crisis.py). Rules and cues cover English, German,
French, Spanish, Italian, Portuguese, Dutch, Polish, Turkish, Arabic, Hindi and Japanese, every message read with
every language's rules; they are data (privacy/data/special_category.json, one schema, loaded and validated once by
``rules()``). Text goes through the shared normaliser first (security/textnorm.py: invisible characters,
look-alike letters, NFKC, case, whitespace) and is stripped of accents (so "depressão", "depressao", "DEPRESSÃO" and
"dep\u00adression" are one word), and every rule is anchored on its script's word boundaries with explicit
inflections (`depress\\w*`, `schwanger\\w*`); Japanese has no spaces, so its rules are whole phrases ("死にたい").

Where the line is drawn (the product keeps ordinary wellness coaching routable):
- special: diagnoses, symptoms of a condition, treatment, therapy, medication, disability, pregnancy and fertility,
  sex life, sexual orientation and gender identity (transgender is filed under "sexual_orientation", the closest
  art. 9 heading), religious practice or belief, party politics and votes, union membership, ethnic origin and
  racism, genetic tests, biometric identification;
- not special: wanting to sleep better, drink more water, eat healthier, lose weight, get fitter, stress, nerves
  before a talk ("I'm anxious about tomorrow"), feeling tired or unmotivated, burnout talked about as workload,
  office politics, maternity or parental leave as an HR topic, idioms ("this deadline is killing me", "I could kill
  for a coffee", "career suicide", "thank God"), a job in health care ("I work as a nurse", "je suis infirmière",
  "ich bin Ärztin", "I work at the hospital": the occupation is set aside, the rest of the sentence still counts).
Clinical framing moves a topic across the line: "anxiety disorder", "my anxiety", "therapy for burnout".
A person's status is data, a subject is not: each sentence is judged as its role reads it. An instruction ("you are
not a therapist", "do not diagnose"), a conditional about someone else ("if the user mentions depression, ...") or a
general question or statement ("what is CBT?", "people with a chronic illness") sets its mentions aside unless a
person cue attaches them to someone ("my therapist", "you told me you take", "context about this client:"). Self-harm
is set aside only by instructions and conditionals in system or developer text, never on the user's side.
Self-harm rules look for intent about oneself ("I want to kill myself", "no reason to live", "je veux mourir") and
skip injuries and idioms ("I hurt myself at the gym", "killing myself trying to hit this deadline"). Self-harm is
mental-health data too, so it always adds "mental_health". Negation is not parsed: "I don't have diabetes" still
mentions a diagnosis and stays local, which is the fail-closed choice.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from functools import cache
from typing import Any

from upcoach.langtables import Tables, bounded
from upcoach.language import written_in
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


@dataclass(frozen=True)
class SpecialCategoryResult:
    categories: tuple[str, ...]
    self_harm: bool
    matches: tuple[str, ...]  # rule names ("health.de", "clinical.en") that counted, never the user's words
    topics: tuple[str, ...] = ()  # rule names that matched only as a topic or an instruction, so did not count


# Rule tables besides the art. 9 categories: intent about oneself, and generic medical words.
_EXTRA_TABLES = ("self_harm", "clinical")
# Cue tables. Person cues attach a mention to a person; discount cues say a sentence is about a topic, or tells the
# assistant what to do, rather than about anyone. "possessive" is read right before each mention ("my depression").
PERSON_CUES = ("self", "we", "you", "other")
DISCOUNT_CUES = ("conditional", "instruction", "general")
CUE_KINDS = (*PERSON_CUES, "possessive", *DISCOUNT_CUES)

# Who "I", "we" and "you" are in each role decides which person cues count there. A user's "you" is the coach; an
# assistant's "I" is the coach and its "you" the person; a system prompt's "you" is the model and its "we" the
# operator. A role not listed (or a tool's output, which may quote anyone) reads with every person cue.
ROLE_PERSON_CUES: dict[str, tuple[str, ...]] = {
    "user": ("self", "we", "other"),
    "assistant": ("you", "other"),
    "system": ("self", "other"),
    "developer": ("self", "other"),
}
# Self-harm is set aside only when the integrator's own text talks about it as a rule ("if the user mentions
# suicide, ..."); on the user's side (user, assistant, tool, anything else) every mention counts.
SELF_HARM_DISCOUNTS: dict[str, tuple[str, ...]] = {
    "system": ("conditional", "instruction"),
    "developer": ("conditional", "instruction"),
}


@dataclass(frozen=True)
class _Rules:
    rules: tuple[tuple[str, str, str, re.Pattern[str]], ...]  # (name "category.lang", category, lang, pattern)
    idioms: re.Pattern[str]
    professions: re.Pattern[str]  # "I work as a nurse": removed like idioms, a job is not anyone's health
    cues: dict[str, re.Pattern[str]]  # kind -> every language's fragments in one pattern
    possessive_before: re.Pattern[str]  # a possessive, maybe one more word, then the end (searched with endpos)


@cache
def rules() -> _Rules:
    """The rule tables (privacy/data/special_category.json), loaded and validated once; ValueError if malformed."""
    return parse_rules(Tables.load("upcoach.privacy", "data/special_category.json").data)


def parse_rules(data: dict[str, Any]) -> _Rules:
    """Validate and compile the tables: every table names every language, every pattern compiles."""
    tables = Tables("special_category.json", data)
    compiled = []
    for category, by_lang in tables.table("categories", _EXTRA_TABLES + CATEGORIES).items():
        for lang, fragments in by_lang.items():
            where = f"categories.{category}.{lang}"
            joined = tables.join(where, fragments)
            if joined is not None:
                compiled.append(
                    (f"{category}.{lang}", category, lang, tables.compile(where, bounded(lang, joined), "{}"))
                )
    cues = {
        kind: tables.join_languages(f"cues.{kind}", by_lang, right=kind != "possessive")
        for kind, by_lang in tables.table("cues", CUE_KINDS).items()
    }
    idioms = tables.join("idioms", data.get("idioms"))
    if idioms is None:
        raise ValueError("special_category.json: idioms must not be empty")
    professions = data.get("professions")
    if not isinstance(professions, dict) or set(professions) != set(tables.languages):
        raise ValueError("special_category.json: professions must name every language")
    return _Rules(
        tuple(compiled),
        tables.compile("idioms", idioms),
        tables.compile("professions", tables.join_languages("professions", professions), "(?:{})"),
        {
            kind: tables.compile(f"cues.{kind}", joined, "(?:{})")
            for kind, joined in cues.items()
            if kind != "possessive"
        },
        tables.compile("cues.possessive", cues["possessive"], r"(?:{})(?: [\w'-]+)? ?$"),
    )


_MEDICAL = frozenset(("health", "mental_health", "medication", "pregnancy", "sex_life", "genetic", "self_harm"))
_SENTENCE_END = re.compile(r"[.!?;]+(?=\s|$)|[。！？।؟]+|\n")  # Japanese, Hindi and Arabic stops need no space


class _Sentence:
    """One sentence of the normalised text and what its cues say, worked out once for all its mentions."""

    __slots__ = ("text", "start", "_tables", "_readings")

    def __init__(self, text: str, start: int, tables: _Rules) -> None:
        self.text = text
        self.start = start
        self._tables = tables
        self._readings: dict[tuple[str, ...], tuple[bool, str]] = {}

    def _reading(self, discounts: tuple[str, ...]) -> tuple[bool, str]:
        """(any of these discount cues present, the sentence with their spans blanked out)."""
        if discounts not in self._readings:
            chars = list(self.text)
            found = False
            for kind in discounts:
                for match in self._tables.cues[kind].finditer(self.text):
                    found = True
                    chars[match.start() : match.end()] = " " * (match.end() - match.start())
            self._readings[discounts] = (found, "".join(chars))
        return self._readings[discounts]

    def counts(self, start: int, role: str, self_harm: bool) -> bool:
        """Does the mention at ``start`` (an offset in the whole text) say something about a person?

        It does unless the sentence carries a discount cue and, outside the discount cues' spans, no person cue:
        no cue at all is the fail-closed reading ("diagnosed with bipolar disorder" counts on its own)."""
        discounts = SELF_HARM_DISCOUNTS.get(role, ()) if self_harm else DISCOUNT_CUES
        if not discounts:
            return True
        found, rest = self._reading(discounts)
        if not found:
            return True
        persons = ROLE_PERSON_CUES.get(role, PERSON_CUES)
        if any(self._tables.cues[kind].search(rest) for kind in persons):
            return True
        return bool(self._tables.possessive_before.search(rest, 0, start - self.start))


def _sentences(normalised: str, tables: _Rules) -> list[_Sentence]:
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(normalised):
        sentences.append(_Sentence(normalised[start : end.start()], start, tables))
        start = end.end()
    sentences.append(_Sentence(normalised[start:], start, tables))
    return sentences


def normalise(text: str) -> str:
    """The form the rules read: the shared normaliser (textnorm.clean) line by line, accents folded.

    Line breaks are kept as sentence boundaries ("- Do not diagnose" and the next bullet are two sentences)."""
    if "\n" not in text and "\r" not in text:
        return fold_accents(clean(text))
    return fold_accents("\n".join(clean(line) for line in text.splitlines()))


def detect_special_categories(text: str, role: str = "user") -> SpecialCategoryResult:
    """The categories ``text`` reveals about a person, read as a message of ``role`` (system, developer, user,
    assistant, tool), sentence by sentence: a mention counts unless its sentence is an instruction, a conditional
    about someone else, or a general question or statement, with nothing in it that attaches the mention to a
    person. Self-harm is only set aside in system and developer instructions."""
    tables = rules()
    # The shared normaliser first (invisibles, look-alikes, NFKC, case, whitespace): "H\u200bIV" is "hiv" here.
    normalised = tables.professions.sub(" ", tables.idioms.sub(" ", normalise(text)))
    categories: set[str] = set()
    matches: list[str] = []
    topics: list[str] = []
    sentences: list[_Sentence] | None = None
    starts: list[int] = []
    scripts = written_in(normalised)  # a language's rules need its letters: Arabic ones never match Latin text
    for name, category, lang, pattern in tables.rules:
        if lang not in scripts:
            continue
        counted = seen = False
        for match in pattern.finditer(normalised):
            seen = True
            if sentences is None:
                sentences = _sentences(normalised, tables)
                starts = [sentence.start for sentence in sentences]
            sentence = sentences[bisect_right(starts, match.start()) - 1]
            if sentence.counts(match.start(), role, category == "self_harm"):
                counted = True
                break
        if counted:
            matches.append(name)
            categories.add(category)
        elif seen:
            topics.append(name)
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
        topics=tuple(topics),
    )
