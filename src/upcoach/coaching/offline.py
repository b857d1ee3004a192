"""The last resort when no model can answer (local down, cloud down or not allowed): the strategies library.

The answer is plainly labelled: it is a list of relevant strategies, not a model's reply, and the API marks it
``processingMode: "offline"`` with the reason and the strategy ids used. Nothing leaves the server. A conversation
with signs of self-harm gets what a model's answer would get: the crisis resources first, the ``self_harm`` flag,
and the reach-out strategy before any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from upcoach.coaching.library import Strategy
from upcoach.coaching.strategies import StrategyRepository
from upcoach.language import identify
from upcoach.llm.base import ChatMessage
from upcoach.privacy.crisis import crisis_resources

OFFLINE_REASON = "no model available: answered from the strategies library"
OFFLINE_BACKEND = "strategies-library"
# When nothing matches: two strategies that help in almost any coaching situation.
DEFAULT_STRATEGIES = ("goals-first-step", "stress-brain-dump")
MAX_STRATEGIES = 2
SELF_HARM_STRATEGY = "support-reach-out"


@dataclass(frozen=True)
class OfflineAnswer:
    text: str
    strategy_ids: list[str]
    reason: str = OFFLINE_REASON
    flags: list[str] = field(default_factory=list)


async def offline_answer(
    strategies: StrategyRepository, messages: Sequence[ChatMessage], *, self_harm: bool = False
) -> OfflineAnswer:
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    language = identify(last_user)
    found = await _in_language(strategies, [SELF_HARM_STRATEGY], language) if self_harm else []
    found += [
        hit.strategy
        for hit in await strategies.search(last_user, limit=MAX_STRATEGIES, language=language)
        if hit.strategy.id not in {s.id for s in found}
    ]
    found = found[:MAX_STRATEGIES]
    if not found:
        found = await _in_language(strategies, list(DEFAULT_STRATEGIES), language)
    parts = [crisis_resources(language)] if self_harm else []
    parts += [
        "I can't reach a coaching model right now, so here "
        + ("is a strategy" if len(found) == 1 else "are strategies")
        + " from the UpCoach library that may help:"
    ]
    for strategy in found:
        steps = "\n".join(f"{n}. {step}" for n, step in enumerate(strategy.steps, 1))
        parts.append(f"**{strategy.title}**: {strategy.summary}\n{steps}")
    return OfflineAnswer("\n\n".join(parts), [s.id for s in found], flags=["self_harm"] if self_harm else [])


async def _in_language(strategies: StrategyRepository, english_ids: list[str], language: str) -> list[Strategy]:
    """The named strategies as written in ``language`` (English where the library has no such translation)."""
    if language == "en":
        return await strategies.get_many(english_ids)
    found = {s.id: s for s in await strategies.get_many([*english_ids, *(f"{i}-{language}" for i in english_ids)])}
    return [found.get(f"{i}-{language}") or found[i] for i in english_ids if f"{i}-{language}" in found or i in found]
