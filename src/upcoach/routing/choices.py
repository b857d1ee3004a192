"""The choices after the first of an ``n > 1`` request, on their way through the hybrid engine.

Choice 0 runs the engine's own path (rehydration, leak watch, usage, the recorded answer). Every other choice gets
the same output checks on its own stream: placeholders a redacted cloud call returned are put back by a rehydrator
of its own, and a choice that reveals the system prompt is withheld from that point on, like choice 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from upcoach.llm.base import Chunk, TokenLogprob
from upcoach.security.canary import LeakWatch
from upcoach.security.guard import StreamRehydrator


@dataclass(frozen=True)
class ChoicePiece:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    leaked: bool = False  # this piece revealed the system prompt: the choice is withheld from here on


@dataclass
class _Choice:
    watch: LeakWatch
    rehydrator: StreamRehydrator | None
    withheld: bool = False


@dataclass
class OtherChoices:
    _choices: dict[int, _Choice] = field(default_factory=dict)

    def feed(
        self, chunk: Chunk, rehydrator: StreamRehydrator | None, watch: Callable[[], LeakWatch]
    ) -> ChoicePiece | None:
        """What to pass on of ``chunk`` (a choice after the first); None when nothing is (a withheld choice)."""
        choice = self._choices.get(chunk.index)
        if choice is None:
            choice = _Choice(watch(), rehydrator.fresh() if rehydrator is not None else None)
            self._choices[chunk.index] = choice
        if choice.withheld:
            return ChoicePiece("") if chunk.finish else None
        text = chunk.text
        if choice.rehydrator is not None:
            text = choice.rehydrator.feed(text) if text else ""
            if chunk.finish:
                text += choice.rehydrator.flush()
        if text and choice.watch.feed(text):
            choice.withheld = True
            return ChoicePiece("", leaked=True)
        if not text and not chunk.logprobs and not chunk.finish:
            return None
        return ChoicePiece(text, chunk.logprobs)
