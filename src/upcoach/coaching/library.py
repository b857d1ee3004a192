"""The offline strategies library as shipped in the package: load, validate, hash, version.

Content lives in ``data/strategies.json`` (hand-written, English) and ``data/strategies/<lang>.json`` (the same
strategies written natively in each other language, in the same order: id = the English id + "-" + lang, same
category, same number of steps). Each strategy's content hash is the SHA-256 of
its canonical JSON, and the library version is a hash over all of them: the same content gives the same version on
every server, so bundle ETags and deltas agree across workers and restarts without any coordination.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

MAX_CHIP_WORDS = 8
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$")
_REQUIRED = ("id", "locale", "category", "title", "summary", "steps", "tags", "chips")


@dataclass(frozen=True)
class Strategy:
    id: str
    locale: str
    category: str
    title: str
    summary: str
    steps: tuple[str, ...]
    tags: tuple[str, ...]
    chips: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    @property
    def search_text(self) -> str:
        """What full-text search sees: every field a person might describe their situation with."""
        return "\n".join([self.title, self.summary, " ".join(self.tags), self.category, *self.steps, *self.chips])


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the byte form hashes and signatures are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def library_version(strategies: Sequence[Strategy]) -> str:
    manifest = {s.id: s.content_hash for s in strategies}
    return hashlib.sha256(canonical_json(manifest)).hexdigest()[:16]


def parse(document: object) -> list[Strategy]:
    """Validate a library document; raise ValueError naming the first bad entry (the file ships with the code,
    so a bad entry is a build error, not something to skip silently)."""
    if not isinstance(document, dict) or not isinstance(document.get("strategies"), list):
        raise ValueError('a strategies document is {"format": 1, "strategies": [...]}')
    strategies: list[Strategy] = []
    seen: set[str] = set()
    for position, entry in enumerate(document["strategies"]):
        where = f"strategy #{position} ({entry.get('id', '?') if isinstance(entry, dict) else '?'})"
        if not isinstance(entry, dict) or any(key not in entry for key in _REQUIRED):
            raise ValueError(f"{where}: needs the fields {', '.join(_REQUIRED)}")
        if not isinstance(entry["id"], str) or not _ID.match(entry["id"]):
            raise ValueError(f"{where}: id must be lowercase letters, digits and dashes")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(entry["id"])
        for key in ("locale", "category", "title", "summary"):
            if not isinstance(entry[key], str) or not entry[key].strip():
                raise ValueError(f"{where}: {key} must be a non-empty string")
        for key in ("steps", "tags", "chips"):
            items = entry[key]
            if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
                raise ValueError(f"{where}: {key} must be a non-empty list of strings")
        if any(len(chip.split()) > MAX_CHIP_WORDS for chip in entry["chips"]):
            raise ValueError(f"{where}: chips have at most {MAX_CHIP_WORDS} words")
        strategies.append(
            Strategy(
                id=entry["id"],
                locale=entry["locale"],
                category=entry["category"],
                title=entry["title"].strip(),
                summary=entry["summary"].strip(),
                steps=tuple(s.strip() for s in entry["steps"]),
                tags=tuple(t.strip().lower() for t in entry["tags"]),
                chips=tuple(c.strip() for c in entry["chips"]),
            )
        )
    return strategies


def translations(english: Sequence[Strategy], language: str, document: object) -> list[Strategy]:
    """Validate one language file against the English library it translates: every English strategy has its
    counterpart, in the same order, with the same category and number of steps, written in ``language``."""
    strategies = parse(document)
    expected = [f"{s.id}-{language}" for s in english]
    if [s.id for s in strategies] != expected:
        missing = sorted(set(expected) - {s.id for s in strategies})
        extra = sorted({s.id for s in strategies} - set(expected))
        raise ValueError(f"strategies/{language}.json: ids must be the English ids + -{language} in the English "
                         f"order (missing {missing[:3]}, unknown {extra[:3]})")  # fmt: skip
    for source, strategy in zip(english, strategies, strict=True):
        if strategy.locale != language:
            raise ValueError(f"{strategy.id}: locale must be {language!r}, the file's language")
        if strategy.category != source.category or len(strategy.steps) != len(source.steps):
            raise ValueError(f"{strategy.id}: category and number of steps must be those of {source.id}")
    return strategies


def load_builtin() -> list[Strategy]:
    """The whole shipped library: English first, then every language file in name order; ids unique across all."""
    data = resources.files("upcoach.coaching").joinpath("data")
    english = parse(json.loads(data.joinpath("strategies.json").read_text("utf-8")))
    if any(s.locale != "en" for s in english):
        raise ValueError("strategies.json holds the English library: every locale must be 'en'")
    library = list(english)
    files = sorted((f for f in data.joinpath("strategies").iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    for file in files:
        language = file.name.removesuffix(".json")
        library += translations(english, language, json.loads(file.read_text("utf-8")))
    if len({s.id for s in library}) != len(library):
        raise ValueError("strategy ids must be unique across the library's files")
    return library
