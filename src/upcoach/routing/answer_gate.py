"""The answer checks on the hybrid path: a local answer is held until its first sentences pass, then released one
checked sentence at a time, so a refusal, a code dump, a loop or unsafe advice never reaches the user.

A check that fails before anything was released raises ``AnswerRejected``: the engine regenerates once with a
stricter prompt, then asks the cloud where the decision allows it, else answers from the strategies library,
and says which in ``routing.reasons``. A check that fails later ends the answer at the last
sentence that passed (the generation is cancelled). Every failure counts in ``upcoach_answer_check_failures_total``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from upcoach.coaching.answer_checks import AnswerWatch, Failure
from upcoach.llm.base import Chunk, Completion, Usage
from upcoach.observability.metrics import Metrics

HOLD_SENTENCES = 2  # sentences checked before the first text is released
HOLD_CHARS = 200  # ... or this much text, whichever comes first (a long first sentence is not held forever)


class AnswerRejected(Exception):
    """A local answer failed a check before any of it reached the user."""

    def __init__(self, failures: Sequence[Failure]) -> None:
        super().__init__(", ".join(str(f) for f in failures))
        self.failures = list(failures)

    @property
    def summary(self) -> str:
        return ", ".join(str(f) for f in self.failures)


async def gated(
    chunks: AsyncIterator[Chunk], watch: AnswerWatch, metrics: Metrics, model: str, cut: list[Failure]
) -> AsyncIterator[Chunk]:
    """``chunks`` with the checks applied: text comes out only once checked. A failure after release ends the
    stream with a final chunk of its own and appends the failures to ``cut``."""
    unreleased = ""
    released = False
    sentences = 0
    emitted_chars = 0
    async with aclosing(chunks) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            if chunk.final is not None:
                failures = watch.finish()
                _count(metrics, failures)
                if failures and not released:
                    raise AnswerRejected(failures)
                if failures:
                    cut.extend(failures)
                elif unreleased:
                    yield Chunk(unreleased)
                yield chunk
                return
            if not chunk.text:
                yield chunk  # admission and keep-alive chunks pass as they are
                continue
            before = len(watch.failures)
            failures = watch.feed(chunk.text)
            _count(metrics, failures)
            if failures:
                if not released:
                    raise AnswerRejected(watch.failures[before:] or failures)
                cut.extend(failures)
                yield Chunk(final=Completion("", "stop", Usage(0, max(1, emitted_chars // 4)), model))
                return
            unreleased += chunk.text
            sentences = watch.sentences
            safe = len(unreleased) - len(watch.pending)
            if not released and (sentences >= HOLD_SENTENCES or len(unreleased) >= HOLD_CHARS):
                released = True
            if released and safe > 0:
                emitted_chars += safe
                yield Chunk(unreleased[:safe])
                unreleased = unreleased[safe:]


def _count(metrics: Metrics, failures: Sequence[Failure]) -> None:
    for failure in failures:
        metrics.answer_check_failures.labels(check=failure.check).inc()
