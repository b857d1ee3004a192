"""Named, multilingual prompt-injection rules, matched on normalised text.

The rules are data: ``security/data/injection/<language>.json`` (that language's words per slot, and its own
rules) and ``shared.json`` (cross-language templates whose ``{{slot}}`` takes every language's words, and the
language-independent rules), one schema, validated when the module loads (``parse_rule_tables``). A language is
added by adding its file; nothing here is per language.

Each rule is a regular expression with a weight: STRONG evidence blocks on its own, MEDIUM flags, WEAK only
counts together with other evidence. Rules are written against the coaching context: users legitimately say
"ignore my phone", "my manager's instructions", "forget that meeting" or "act as if I'm confident", so a rule
needs an AI-directed object ("previous instructions", "your system prompt") before it counts as strong.

Rules match the *skeleton*: ``normalize`` (NFKC, invisibles, homoglyphs, leetspeak folded) with "l" merged
into "i", because a leetspeak "1" can stand for either ("a11 prev10us" → "aii previous"); patterns get the same
merge when compiled, so they are written in plain spelling. Role tags, URLs and delimiters survive that folding
("<|1m_574r7|>" becomes "<|im_start|>").

Speed: Python's ``re`` needs ~50 µs to *search* one of these alternation-heavy patterns through a long message,
which times 60 rules would blow the latency budget. So each pattern's possible literal openings ("ignore",
"disregard", "vergiss", …) are worked out once from its parse tree, located with ``str.find`` (C speed), and the
pattern is only *matched* there: the same result as ``search``, since a match has to begin with one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from re import _constants as _c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

import numpy as np

from upcoach.language import LANGUAGES
from upcoach.security.textnorm import codepoints, ngram_hashes, rule_form, string_hashes

STRONG = 0.92
MEDIUM = 0.6
WEAK = 0.3


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]
    openings: frozenset[str] | None  # literal starts of every match; None: no usable ones, search instead


def skeleton(normalized: str) -> str:
    return normalized.replace("l", "i")


_OPENING_LEN = 4  # long enough for str.find to be selective
_MAX_OPENINGS = 512


def _openings(items: Iterable[tuple[Any, Any]]) -> tuple[set[str], bool] | None:
    """Literal strings that every match of the parsed ``items`` starts with, and whether they are the whole match.

    None when some construct (a character category, a large class) leaves the opening unknown.
    """
    partial = {""}
    for op, av in items:
        if all(len(p) >= _OPENING_LEN for p in partial):
            return partial, False
        got: tuple[set[str], bool] | None
        if op is _c.AT:  # \b, ^: zero-width
            continue
        if op is _c.LITERAL:
            got = ({chr(av)}, True)
        elif op is _c.SUBPATTERN:
            got = _openings(av[-1])
        elif op is _c.BRANCH:
            branches = [_openings(alt) for alt in av[1]]
            got = None
            if all(b is not None for b in branches):
                got = (set().union(*(b[0] for b in branches if b)), all(b[1] for b in branches if b))
        elif op is _c.IN and len(av) <= 8 and all(o is _c.LITERAL for o, _ in av):
            got = ({chr(a) for _, a in av}, True)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, sub = av
            inner = _openings(sub)
            got = None
            if inner is not None:
                strings, exact = inner
                if lo == 0:
                    got = (strings | {""}, exact and hi == 1)
                else:
                    repeated = strings
                    for _ in range(min(lo, _OPENING_LEN) - 1):
                        repeated = {x + y for x in repeated for y in strings}
                    got = (repeated, exact and lo == hi and lo <= _OPENING_LEN)
        else:
            got = None
        if got is None:
            return partial, False
        partial = {p + s for p in partial for s in got[0]}
        if len(partial) > _MAX_OPENINGS:
            return None
        if not got[1]:
            return partial, False
    return partial, True


def _rule(name: str, weight: float, pattern: str) -> Rule:
    pattern = skeleton(pattern)
    compiled = re.compile(pattern)
    try:
        found = _openings(_parser.parse(pattern))
    except Exception:  # a private API: if it ever changes, searching is slower but still correct
        found = None
    openings = None
    if found is not None and all(len(o) >= 2 for o in found[0]):
        openings = frozenset(found[0])
    return Rule(name, weight, compiled, openings)


_WEIGHTS = {"strong": STRONG, "medium": MEDIUM, "weak": WEAK}
# The attack families the detector knows; a rule of the data names one of them (``token_flood`` is computed).
FAMILIES = frozenset({
    "ignore_previous", "reveal_prompt", "developer_mode", "jailbreak", "persona_override", "no_restrictions",
    "new_instructions", "access_granted", "role_tag", "markdown_exfil", "delimiter_spoof",
})  # fmt: skip
_SLOT = re.compile(r"\{\{([a-z_]+)\}\}")
_ROW_KEYS = {"name", "weight", "pattern"}


def _words(where: str, vocabulary: Any) -> dict[str, list[str]]:
    if not isinstance(vocabulary, dict):
        raise ValueError(f"{where}.vocabulary must map slot names to lists of words")
    for slot, words in vocabulary.items():
        ok = isinstance(words, list) and words and all(isinstance(w, str) and w.strip() for w in words)
        if not re.fullmatch(r"[a-z_]+", slot) or not ok:
            raise ValueError(f"{where}.vocabulary.{slot} must be a non-empty list of non-empty strings")
    return vocabulary


def _expand(where: str, pattern: str, vocabulary: dict[str, list[str]]) -> str:
    def fill(match: re.Match[str]) -> str:
        words = vocabulary.get(match.group(1))
        if not words:
            raise ValueError(f"{where}: no words for slot {{{{{match.group(1)}}}}}")
        return "(?:" + "|".join(words) + ")"

    return _SLOT.sub(fill, pattern)


def _rows(where: str, rows: Any, vocabulary: dict[str, list[str]]) -> list[Rule]:
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{where}.rules must be a non-empty list")
    rules = []
    for i, row in enumerate(rows):
        at = f"{where}.rules[{i}]"
        if not isinstance(row, dict) or set(row) != _ROW_KEYS:
            raise ValueError(f"{at} must have exactly name, weight and pattern")
        if row["name"] not in FAMILIES:
            raise ValueError(f"{at}: unknown rule name {row['name']!r} (one of {sorted(FAMILIES)})")
        if row["weight"] not in _WEIGHTS:
            raise ValueError(f"{at}: weight must be one of {sorted(_WEIGHTS)}")
        pattern = row["pattern"]
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"{at}: pattern must be a non-empty string")
        try:
            rules.append(_rule(row["name"], _WEIGHTS[row["weight"]], rule_form(_expand(at, pattern, vocabulary))))
        except re.error as exc:
            raise ValueError(f"{at}: pattern does not compile: {exc}") from exc
    return rules


def parse_rule_tables(tables: dict[str, Any]) -> tuple[Rule, ...]:
    """The rules of ``security/data/injection/``: ``shared`` plus one table per language; ``ValueError`` naming
    the file and row if anything is malformed.

    A language table has ``language``, ``vocabulary`` (slot → words) and ``rules``; a ``{{slot}}`` in its rules is its
    own words. ``shared`` has only ``rules``; a ``{{slot}}`` there is every language's words for the slot, so the
    cross-language templates ("reveal … your system prompt") cover a language as soon as it lists its words.
    """
    unknown = set(tables) - {"shared", *LANGUAGES}
    if unknown or "shared" not in tables:
        raise ValueError(
            f"injection rules: tables must be 'shared' and languages among {LANGUAGES}, got {sorted(unknown)}"
        )
    rules: list[Rule] = []
    union: dict[str, list[str]] = {}
    for lang in (lang for lang in LANGUAGES if lang in tables):
        table, where = tables[lang], f"injection/{lang}.json"
        if (
            not isinstance(table, dict)
            or table.get("language") != lang
            or set(table) - {"_about", "language", "vocabulary", "rules"}
        ):
            raise ValueError(f"{where} must have language {lang!r}, vocabulary and rules")
        vocabulary = _words(where, table.get("vocabulary", {}))
        rules += _rows(where, table.get("rules"), vocabulary)
        for slot, words in vocabulary.items():
            union.setdefault(slot, []).extend(w for w in words if w not in union[slot])
    shared = tables["shared"]
    if not isinstance(shared, dict) or set(shared) - {"_about", "rules"}:
        raise ValueError("injection/shared.json must have only rules")
    return (*_rows("injection/shared.json", shared.get("rules"), union), *rules)


def load_rule_tables() -> dict[str, Any]:
    folder = resources.files("upcoach.security").joinpath("data/injection")
    return {
        entry.name.removesuffix(".json"): json.loads(entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    }


RULES: tuple[Rule, ...] = parse_rule_tables(load_rule_tables())
RULE_NAMES: frozenset[str] = frozenset(rule.name for rule in RULES) | {"token_flood"}
_ALL_OPENINGS: tuple[str, ...] = tuple(sorted({o for rule in RULES if rule.openings for o in rule.openings}))
# Which openings occur at all is decided from hashes of the message's 2-4-grams: one numpy pass instead of 380
# substring searches (~1 µs each on a long message). A hash only preselects; str.find confirms.
_OPENING_KEYS = string_hashes([o[:_OPENING_LEN] for o in _ALL_OPENINGS])
_KEY_SIZES = range(2, _OPENING_LEN + 1)

# Padding attacks repeat one short token hundreds of times ("ö ö ö …", ") ] } ) ] }") to push the system prompt
# out of the model's attention; real messages of this length are never this repetitive.
_FLOOD_MIN_TOKENS = 40
_SHORT_TEXT = 200  # below this, plain substring tests beat numpy's fixed overhead
_FLOOD_MAX_UNIQUE_RATIO = 0.2


def match_rules(normalized: str) -> dict[str, float]:
    """Rule name → strongest weight that fired, for a message in ``normalize`` form."""
    skel = skeleton(normalized)
    present = _present_openings(skel)
    hits: dict[str, float] = {}
    where: dict[str, list[int]] = {}
    for rule in RULES:
        if hits.get(rule.name, 0.0) >= rule.weight:
            continue
        if rule.openings is None:
            found = rule.pattern.search(skel) is not None
        else:
            live = rule.openings & present
            found = bool(live) and _matches_at(rule.pattern, live, skel, where)
        if found:
            hits[rule.name] = rule.weight
    tokens = skel.split()
    if len(tokens) >= _FLOOD_MIN_TOKENS and len(set(tokens)) <= len(tokens) * _FLOOD_MAX_UNIQUE_RATIO:
        hits["token_flood"] = MEDIUM
    return hits


def _present_openings(skel: str) -> set[str]:
    if len(skel) < _SHORT_TEXT:
        return {opening for opening in _ALL_OPENINGS if opening in skel}
    grams = np.sort(ngram_hashes(codepoints(skel), _KEY_SIZES))
    pos = np.minimum(np.searchsorted(grams, _OPENING_KEYS), len(grams) - 1)
    return {_ALL_OPENINGS[i] for i in np.flatnonzero(grams[pos] == _OPENING_KEYS)}


def _matches_at(pattern: re.Pattern[str], openings: Iterable[str], skel: str, where: dict[str, list[int]]) -> bool:
    """Whether ``pattern`` matches at some occurrence of one of ``openings`` (positions cached in ``where``)."""
    for opening in openings:
        positions = where.get(opening)
        if positions is None:
            positions = []
            at = skel.find(opening)
            while at != -1:
                positions.append(at)
                at = skel.find(opening, at + 1)
            where[opening] = positions
        for at in positions:
            if pattern.match(skel, at):
                return True
    return False
