"""What our path adds to a coaching conversation before a model sees it: the built-in persona (per language) when
the caller sent no system prompt, and the strategies retrieved from the library as material to adapt.

Retrieval is the library's full-text search in our own database, so it stays local for every conversation, private
ones included; the ids of the strategies given are returned so the response can name them. The wording lives in
``data/prompts.json`` with a version (``PROMPT_VERSION``) that the quality harness and the ratings report by.

The material goes in a system message just before the last user turn: the leading system prompt stays the same
for every conversation (the local engine keeps it warm in its prefix cache), and a small model weighs what is
closest to the question most.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from upcoach.coaching.library import Strategy
from upcoach.coaching.strategies import StrategyRepository
from upcoach.langtables import LANGUAGES
from upcoach.llm.base import ChatMessage
from upcoach.storage.database import transient

log = logging.getLogger(__name__)

MAX_MATERIAL = 2  # strategies given per answer: more crowds a small model's context and gets copied verbatim
MIN_SCORE = 0.0  # any full-text match counts; the ranking decides which two


@cache
def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("upcoach.coaching").joinpath("data/prompts.json").read_text("utf-8")
    )
    for key in ("persona", "material", "strict"):
        if set(data[key]) != set(LANGUAGES):
            raise ValueError(f"prompts.json: {key} needs exactly the languages {LANGUAGES}")
    return data


PROMPT_VERSION: str = _data()["version"]


def _lang(language: str) -> str:
    return language if language in LANGUAGES else "en"


def persona(language: str) -> str:
    """The built-in coaching system prompt for ``language`` (English for any other)."""
    return str(_data()["persona"][_lang(language)])


def strict_instruction(language: str, problem: str) -> str:
    return str(_data()["strict"][_lang(language)]).format(problem=problem)


def material_text(strategies: Sequence[Strategy], language: str) -> str:
    listed = "\n".join(
        f"- {s.title}: {s.summary} Steps: " + " ".join(f"{n}. {step}" for n, step in enumerate(s.steps, 1))
        for s in strategies
    )
    return str(_data()["material"][_lang(language)]).format(strategies=listed)


@dataclass(frozen=True)
class Prepared:
    """The messages a model gets, and what they were built from."""

    messages: tuple[ChatMessage, ...]
    strategy_ids: tuple[str, ...] = ()
    topic: str = ""  # titles of the strategies given: words an on-topic answer may use besides the question's
    language: str = "en"
    persona: bool = False

    def stricter(self, problem: str) -> tuple[ChatMessage, ...]:
        """The same conversation with a stricter instruction at its end, after the question and any material."""
        return (*self.messages, ChatMessage("system", strict_instruction(self.language, problem)))


class CoachingPrompts:
    """Builds ``Prepared`` messages: persona when there is no system prompt, material when grounding is on."""

    def __init__(self, strategies: StrategyRepository | None, *, persona: bool = True, grounding: bool = True) -> None:
        self.strategies = strategies
        self.use_persona = persona
        self.grounding = grounding and strategies is not None

    async def retrieve(self, messages: Sequence[ChatMessage], language: str = "en") -> list[Strategy]:
        """The library's best strategies for the conversation: the last user turn first, the one before as context.

        Only strategies written in the conversation's language, found by that language's full-text search: an
        English query word that happens to appear in a French question would pick unrelated English material
        (measured: a French sleep question grounded in "arrive five minutes early")."""
        if self.strategies is None:
            return []
        users = [m.content for m in messages if m.role == "user"]
        if not users:
            return []
        hits = await self.strategies.search(users[-1], limit=MAX_MATERIAL, language=language)
        if len(hits) < MAX_MATERIAL and len(users) > 1:
            hits += await self.strategies.search(users[-2], limit=MAX_MATERIAL, language=language)
        chosen: dict[str, Strategy] = {}
        for hit in hits:
            if (hit.score > MIN_SCORE or hit.score < 0) and hit.strategy.locale.split("-")[0] == language:
                chosen.setdefault(hit.strategy.id, hit.strategy)
        return list(chosen.values())[:MAX_MATERIAL]

    async def _material(self, messages: tuple[ChatMessage, ...], language: str) -> list[Strategy]:
        """Grounding material, or none while the database is unreachable: the answer goes on without it."""
        try:
            return await self.retrieve(messages, _lang(language))
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("strategies library unreachable (%s): answering without material", type(exc).__name__)
            return []

    async def prepare(self, messages: tuple[ChatMessage, ...], language: str) -> Prepared:
        has_system = bool(messages) and messages[0].role in ("system", "developer")
        out = list(messages)
        added_persona = False
        if self.use_persona and not has_system:
            out.insert(0, ChatMessage("system", persona(language)))
            added_persona = True
        found = await self._material(messages, language) if self.grounding else []
        if found and out and out[-1].role == "user":
            # After the question, not before it: everything up to the question stays the same from one turn (and
            # one user) to the next, so the engine's prefix cache keeps serving the system prompt and the history.
            out.append(ChatMessage("system", material_text(found, language)))
        return Prepared(
            tuple(out), tuple(s.id for s in found), " ".join(s.title for s in found), _lang(language), added_persona
        )
