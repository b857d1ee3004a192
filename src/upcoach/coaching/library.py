"""The offline strategies library as shipped in the package: load, validate, hash, version.

Content lives in ``data/strategies.json`` (hand-written, English). Each strategy's content hash is the SHA-256 of
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


def load_builtin() -> list[Strategy]:
    text = resources.files("upcoach.coaching").joinpath("data/strategies.json").read_text("utf-8")
    return parse(json.loads(text))
