"""Suggestion chips: a few short replies the user can tap, written by the LOCAL model under a grammar.

Speed is the whole design (the plan's gate is P95 <= 300 ms on a 2-core CPU, where decode runs at ~45 tok/s):
- the system prompt is small and fixed per (style, language), so the engine keeps it warm in its prefix cache;
- only the last coach and user turns go in, each cut to its last ~200 characters;
- a GBNF grammar makes the model write exactly ``count`` lines of 1-8 words and then stop: no JSON braces or
  quotes to pay for, no preamble, no run-on, and ``max_tokens`` is bounded by the count;
- greedy decoding (temperature 0): the most likely short reply, reproducible for the same conversation;
- several chips are decoded side by side (``ChatRequest.branches``): one one-line answer per chip, each from a
  different first token, all advanced in one llama.cpp batch per step. The answer takes as many steps as the
  longest chip instead of the sum of all, and the forced different starts give distinct chips where greedy
  decoding of one sequence repeats itself. A step is not free, though: on this 2-core CPU a batch of 2 costs
  ~2x a single token and a batch of 5 ~3.7x (measured), so five chips still cost well over one. Should that
  path fail, the chips are written the old way, one line after another in one sequence.
When the model cannot answer in time (not loaded, queue full, a queue ahead of us longer than the budget, or the
budget runs out mid-generation) the chips come from the strategies library instead (full-text search on the
last user message) and the answer says so with ``source: "library"``.

Experiments vary the wording through ``style`` (a prompt-template id, see CHIP_STYLES).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from upcoach.coaching.library import MAX_CHIP_WORDS
from upcoach.coaching.strategies import StrategyRepository
from upcoach.errors import InvalidRequest, Overloaded, Unavailable
from upcoach.llm.base import (
    Backend,
    ChatMessage,
    ChatRequest,
    GenerationParams,
    collect,
    follows_grammar,
    serving_engine,
)

log = logging.getLogger(__name__)

MAX_TURN_CHARS = 200
TOKENS_PER_CHIP = 12


@dataclass(frozen=True)
class ChipStyle:
    instruction: str
    # Replies for the two worked examples in the system prompt (EXAMPLE_TURNS), three each.
    examples: tuple[tuple[str, str, str], tuple[str, str, str]]


# Two different worked examples: with one, a 0.5B model copies its replies into every conversation.
EXAMPLE_TURNS = (
    ("What would make this week a success for you?", "I keep putting off my report."),
    ("How did the meeting with your team go?", "Badly, nobody listened to my idea."),
)
# Prompt-template ids an experiment can assign per variant (e.g. A "default", B "action"). The worked examples
# live in the system prompt, which the engine caches: few-shot costs nothing per request.
CHIP_STYLES: dict[str, ChipStyle] = {
    "default": ChipStyle(
        "natural replies the user might send next",
        (
            ("I'll start with ten minutes today", "Help me break it down", "Why do I keep avoiding it?"),
            ("I felt ignored and annoyed", "How can I get them to listen?", "I'll talk to my lead tomorrow"),
        ),
    ),
    "action": ChipStyle(
        "replies where the user commits to a small, concrete next step",
        (
            ("I'll write the outline tonight", "I'll block an hour tomorrow", "I'll ask a colleague for input"),
            ("I'll send my idea in writing", "I'll ask for five minutes next time", "I'll find one ally first"),
        ),
    ),
    "question": ChipStyle(
        "questions the user might ask the coach next",
        (
            ("How do I get started?", "What if I fail again?", "Can you give me a plan?"),
            ("How do I speak up better?", "Was my idea the problem?", "What should I say next time?"),
        ),
    ),
    "feeling": ChipStyle(
        "replies where the user says honestly how they feel",
        (
            ("Honestly, I feel overwhelmed", "I'm frustrated with myself", "I feel a bit hopeful now"),
            ("I feel invisible in that team", "Mostly I'm angry about it", "It hurt more than I expected"),
        ),
    ),
}
LANGUAGES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "fi": "Finnish", "pl": "Polish",
    "cs": "Czech", "tr": "Turkish", "ru": "Russian", "uk": "Ukrainian", "ja": "Japanese", "zh": "Chinese",
    "ko": "Korean", "ar": "Arabic", "hi": "Hindi",
}  # fmt: skip
GENERIC_CHIPS = ("What should I do first?", "Can you give an example?", "Tell me more", "That helps, thanks")
# Library chips are not written per style: these pick the ones that read like the style an experiment assigned,
# so a chip-wording experiment still compares wordings when the library answers (model busy or over budget).
_STYLE_PATTERNS = {
    "question": re.compile(r"\?\s*$"),
    "action": re.compile(r"^(?:i will|i'll|i'm going to|i am going to|i can|let's|today|tomorrow|tonight|this week)\b",
                         re.IGNORECASE),
    "feeling": re.compile(r"\b(?:feel|feeling|felt|i'm|i am)\b", re.IGNORECASE),
}  # fmt: skip
SELF_HARM_STRATEGY = "support-reach-out"

_LEAD = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|[\"'“”‘’])\s*")
_TRAIL = re.compile(r"[\"'“”‘’.,;:]+$")
_PUNCTUATION = re.compile(r"[^\w\s]+")


# Characters a chip never needs: sentence and role punctuation (":" is how "Coach:" transcripts start, "." how
# run-on second sentences and "A." lists start), quotes, brackets, markup.
_BANNED = '\\t\\n"()\\[\\]{}<>:;.*#_|\\\\/`=+~^'
# Han, kana, hangul and full-width forms: a small multilingual model drifts into them mid-sentence.
_CJK = "\\u3000-\\u9fff\\uac00-\\ud7af\\uff00-\\uffef"
_CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})


def chip_grammar(count: int, locale: str = "en") -> str:
    """Exactly ``count`` lines of 1-8 words; a line starts with a letter (no bullets or numbering), has no
    sentence punctuation, "?", "!" or "," only end a word (no "???" runs); CJK only for Chinese, Japanese, Korean."""
    banned = _BANNED + ("" if locale.split("-")[0].lower() in _CJK_LANGUAGES else _CJK)
    return (
        f"root ::= {' '.join(['line'] * count)}\n"
        f'line ::= lead (" " word){{0,{MAX_CHIP_WORDS - 1}}} "\\n"\n'
        f"lead ::= [^ 0-9?!,\\-{banned}] [^ ?!,{banned}]{{0,15}} [?!,]?\n"
        f"word ::= [^ ?!,{banned}]{{1,16}} [?!,]?\n"
    )


def system_prompt(style: str, locale: str) -> str:
    language = LANGUAGES.get(locale.split("-")[0].lower(), f"the language with code {locale}")
    chosen = CHIP_STYLES[style]
    examples = "\n\n".join(
        f"Example {n}:\nCoach: {coach}\nUser: {user}\nReplies:\n" + "\n".join(replies)
        for n, ((coach, user), replies) in enumerate(zip(EXAMPLE_TURNS, chosen.examples, strict=True), 1)
    )
    return (
        "You write quick-reply chips for a coaching chat app. Read the end of the conversation and write "
        f"short replies the user could tap next: {chosen.instruction}. Write in {language}, in the user's voice, "
        "about the user's own situation, one reply per line, two to six words each, all different.\n\n" + examples
    )


def clean_chip(text: str) -> str:
    """Trim what the grammar allows but a chip should not carry; at most MAX_CHIP_WORDS words."""
    text = _LEAD.sub("", text.strip())
    words = text.split()[:MAX_CHIP_WORDS]
    text = " ".join(words)
    text = _TRAIL.sub("", text) if not text.endswith(("?", "!")) else text
    return text.strip()


# A small model sometimes copies the worked examples verbatim: they were written for another conversation.
_EXAMPLE_REPLIES = frozenset(
    reply.casefold() for style in CHIP_STYLES.values() for ex in style.examples for reply in ex
)


def parse_chips(output: str, count: int) -> list[str]:
    """Clean, distinct chips from the model's lines; verbatim copies of the prompt's examples are dropped.

    Distinct ignores case and punctuation ("Why do I avoid it?" and "why do I avoid it" are one chip to a user),
    and a chip that only puts a word in front of another ("Really, I feel overwhelmed") is that chip again:
    parallel branches start with different words but can end the same way.
    """
    chips: list[str] = []
    seen: set[str] = {_key(reply) for reply in _EXAMPLE_REPLIES}
    kept: list[list[str]] = []
    for line in output.splitlines():
        chip = clean_chip(line)
        key = _key(chip)
        if len(chip) < 2 or key in seen or any(_near(key.split(), other) for other in kept):
            continue
        seen.add(key)
        kept.append(key.split())
        chips.append(chip)
    return chips[:count]


def _near(a: list[str], b: list[str]) -> bool:
    """One chip ends with the other (two words or more), or the two differ only in their first word."""
    short, long = sorted((a, b), key=len)
    return (len(short) >= 2 and long[len(long) - len(short) :] == short) or (len(a) == len(b) > 2 and a[1:] == b[1:])


def _key(chip: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", chip.casefold()).split())


@dataclass
class Chip:
    text: str
    source: str  # "model" | "library"
    strategy_id: str | None = None


@dataclass(frozen=True)
class Declined:
    """Why the model wrote no chips this time (the library answers instead)."""

    reason: str
    model_latency_ms: float | None = None  # the model ran, but nothing it wrote was usable


@dataclass
class ChipsResult:
    chips: list[Chip]
    source: str
    model: str | None
    latency_ms: float
    model_latency_ms: float | None = None
    reason: str | None = None
    strategy_ids: list[str] = field(default_factory=list)
    locale: str = "en"
    precomputed: bool = False  # written in the background after the answer (coaching/chips_ahead.py)


def _conversation(messages: Sequence[ChatMessage], count: int) -> str:
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    last_coach = next((m.content for m in reversed(messages) if m.role == "assistant"), "")
    lines = []
    if last_coach:
        lines.append(f"Coach: {_tail(last_coach)}")
    if last_user:
        lines.append(f"User: {_tail(last_user)}")
    lines.append(f"Write {count} replies.")
    return "\n".join(lines)


def _tail(text: str) -> str:
    """The end of a turn: that is what the next reply answers."""
    text = " ".join(text.split())
    if len(text) <= MAX_TURN_CHARS:
        return text
    cut = text[-MAX_TURN_CHARS:]
    return "…" + cut[cut.find(" ") + 1 :] if " " in cut else cut


class ChipService:
    def __init__(self, strategies: StrategyRepository, budget_ms: float) -> None:
        self.strategies = strategies
        self.budget_ms = budget_ms

    async def suggest(
        self,
        backend: Backend | None,
        messages: Sequence[ChatMessage],
        *,
        count: int,
        locale: str,
        style: str = "default",
        budget_ms: float | None = None,
        self_harm: bool = False,
        request_id: str = "",
    ) -> ChipsResult:
        started = time.perf_counter()
        if self_harm:
            reason = "signs of distress: support suggestions from the library"
            # Support chips first whatever the style: never reordered for an experiment.
            return await self._library(messages, count, started, reason, preferred=SELF_HARM_STRATEGY)
        written = await self.from_model(
            backend, messages, count=count, locale=locale, style=style, budget_ms=budget_ms, request_id=request_id
        )
        if isinstance(written, Declined):
            return await self._library(
                messages, count, started, written.reason, style, model_latency_ms=written.model_latency_ms
            )
        result = await self.topped_up(written, messages, count, style)
        result.latency_ms = (time.perf_counter() - started) * 1000
        return result

    async def from_model(
        self,
        backend: Backend | None,
        messages: Sequence[ChatMessage],
        *,
        count: int,
        locale: str,
        style: str = "default",
        budget_ms: float | None = None,
        request_id: str = "",
        background: bool = False,
    ) -> ChipsResult | Declined:
        """Chips the local model wrote (possibly fewer than ``count``), or why it did not. ``background``: work
        nobody waits for yet (chips computed ahead), queued behind every user request and never refused for a
        busy model here (the engine decides, llm/admission.py)."""
        started = time.perf_counter()
        budget = budget_ms or self.budget_ms
        reason = self._unfit(backend)
        if reason is None and not background:
            assert backend is not None
            health = await backend.health()
            if not health.ok:
                reason = f"local model busy ({health.reason or 'not ready'})"
            else:
                wait = _expected_wait_ms(backend)
                if wait > budget:
                    reason = f"local model busy (about {wait:.0f} ms of work queued ahead)"
        if reason is not None:
            return Declined(reason)
        assert backend is not None
        sequential = ChatRequest(
            (ChatMessage("system", system_prompt(style, locale)), ChatMessage("user", _conversation(messages, count))),
            GenerationParams(max_tokens=count * TOKENS_PER_CHIP, temperature=0.0),
            request_id=request_id,
            grammar=chip_grammar(count, locale),
            background=background,
        )
        try:
            async with asyncio.timeout(budget / 1000):
                completion = None
                if count > 1 and self._branches(backend):
                    parallel = replace(
                        sequential,
                        params=replace(sequential.params, max_tokens=TOKENS_PER_CHIP),
                        grammar=chip_grammar(1, locale),
                        branches=count,
                    )
                    try:
                        completion = await collect(backend.stream(parallel))
                    except (Unavailable, InvalidRequest) as exc:
                        log.warning("parallel chips failed (%s); writing them one after another", exc)
                if completion is None:
                    completion = await collect(backend.stream(sequential))
        except TimeoutError:
            return Declined(f"local model over the {budget:.0f} ms budget")
        except (Overloaded, Unavailable) as exc:
            return Declined(f"local model unavailable ({exc.code})")
        model_ms = (time.perf_counter() - started) * 1000
        texts = parse_chips(completion.text if completion else "", count)
        if not texts or (completion is not None and completion.finish_reason == "cancelled"):
            return Declined("the model wrote no usable chip", model_latency_ms=model_ms)
        return ChipsResult(
            chips=[Chip(text, "model") for text in texts],
            source="model",
            model=completion.model if completion else None,
            latency_ms=model_ms,
            model_latency_ms=model_ms,
            locale=locale,
        )

    async def topped_up(
        self, result: ChipsResult, messages: Sequence[ChatMessage], count: int, style: str
    ) -> ChipsResult:
        """``result``'s first ``count`` chips, and library chips after them when the model wrote fewer."""
        chips = result.chips[:count]
        if len(chips) == count:
            return replace(result, chips=chips)
        extra = await self._library_chips(messages, count, style, exclude={c.text.casefold() for c in chips})
        chips += extra[: count - len(chips)]
        strategy_ids = list(dict.fromkeys(c.strategy_id for c in chips if c.strategy_id))
        return replace(result, chips=chips, strategy_ids=strategy_ids)

    @staticmethod
    def _unfit(backend: Backend | None) -> str | None:
        if backend is None:
            return "local model not loaded"
        if not follows_grammar(backend):
            return "the local backend cannot constrain output"
        return None

    @staticmethod
    def _branches(backend: Backend) -> bool:
        return bool(getattr(serving_engine(backend), "supports_branches", False))

    async def _library(
        self,
        messages: Sequence[ChatMessage],
        count: int,
        started: float,
        reason: str,
        style: str = "default",
        preferred: str | None = None,
        model_latency_ms: float | None = None,
    ) -> ChipsResult:
        chips = await self._library_chips(messages, count, style, preferred=preferred)
        return ChipsResult(
            chips=chips,
            source="library",
            model=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            model_latency_ms=model_latency_ms,  # the model ran, but nothing it wrote was usable
            reason=reason,
            strategy_ids=list(dict.fromkeys(c.strategy_id for c in chips if c.strategy_id)),
            locale="en",  # the library is written in English
        )

    async def _library_chips(
        self,
        messages: Sequence[ChatMessage],
        count: int,
        style: str = "default",
        exclude: set[str] | None = None,
        preferred: str | None = None,
    ) -> list[Chip]:
        """Chips of the strategies that best match the last user message, taking the best one of each in turn;
        those that read like ``style`` first (a stable sort keeps the best strategies first within each group)."""
        seen = set(exclude or ())
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        strategies = []
        if preferred is not None:
            strategies = await self.strategies.get_many([preferred])
        try:
            strategies += [hit.strategy for hit in await self.strategies.search(last_user, limit=count)]
        except Exception:  # the fallback must not fail because search did: generic chips still help
            log.exception("strategy search failed")
        chips: list[Chip] = []
        for round_ in range(max((len(s.chips) for s in strategies), default=0)):
            for strategy in strategies:
                if round_ < len(strategy.chips) and strategy.chips[round_].casefold() not in seen:
                    seen.add(strategy.chips[round_].casefold())
                    chips.append(Chip(strategy.chips[round_], "library", strategy.id))
        for text in GENERIC_CHIPS:
            if text.casefold() not in seen:
                seen.add(text.casefold())
                chips.append(Chip(text, "library"))
        pattern = _STYLE_PATTERNS.get(style)
        if pattern is not None:
            chips.sort(key=lambda chip: pattern.search(chip.text) is None)
        return chips[:count]


def _expected_wait_ms(backend: Backend) -> float:
    """How long requests already admitted will keep the local model busy (0 when idle), from the engine's
    live figures: a batching engine's own estimate of the wait for a free slot (0 while one is free), else its
    queue depth times its average service time."""
    details = backend.info().details
    wait = details.get("estimated_wait_ms")
    if isinstance(wait, int | float):
        return float(wait)
    pending = details.get("queue_depth") or 0
    service = details.get("service_ms_ewma") or 1000.0
    return float(pending) * float(service)  # type: ignore[arg-type]
