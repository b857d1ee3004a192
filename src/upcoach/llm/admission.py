"""Who goes into the batch next, who gives a slot up for a user, and how long a new request waits for its first token.

Three classes of waiting sequences, admitted in this order: suggestion chips a user waits for (short and
interactive), answers, and background work nobody waits for yet (chips computed ahead, coaching/chips_ahead.py).
Within a class, arrival order. A user request overtakes a waiting one of a later class only while that one has
waited less than ``OVERTAKE_LIMIT_S``: a stream of chips requests cannot starve an answer.

Background work is the exception on both sides, so that it never delays a user: every user request overtakes it
whenever it arrives, a running background sequence gives its slot up (it is preempted) when a user request could
not be admitted otherwise, and background work still waiting after ``BACKGROUND_MAX_WAIT_S`` is dropped, since its
result would come too late to be of use. So it never waits without bound either: it runs or it is dropped.

Everything here is a pure function of the waiting room and the batch, called on the engine thread (the estimate
also from the event loop: it only reads plain numbers and copies).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

CHIPS, ANSWER, BACKGROUND = 0, 1, 2
# A waiting user request is overtaken by later ones of an earlier class for at most this long.
OVERTAKE_LIMIT_S = 5.0
# Background work not admitted within this long is dropped: the user has asked for its result by then.
BACKGROUND_MAX_WAIT_S = 20.0


class _Request(Protocol):
    @property
    def branches(self) -> int: ...
    @property
    def background(self) -> bool: ...


class _Job(Protocol):
    @property
    def request(self) -> _Request: ...
    @property
    def enqueued(self) -> float: ...


class Waiting(Protocol):
    @property
    def job(self) -> _Job: ...


W = TypeVar("W", bound=Waiting)


def rank(request: _Request) -> int:
    if request.background:
        return BACKGROUND
    return CHIPS if request.branches > 1 else ANSWER


def position(waiting: Sequence[W], arriving: W, now: float) -> int:
    """Where ``arriving`` joins the waiting room: before the first sequence of a later class it may overtake."""
    own = rank(arriving.job.request)
    for index, other in enumerate(waiting):
        theirs = rank(other.job.request)
        if theirs > own and (theirs == BACKGROUND or now - other.job.enqueued < OVERTAKE_LIMIT_S):
            return index
    return len(waiting)


def expired(waiting: Iterable[W], now: float) -> list[W]:
    """Background work that waited too long to be worth running."""
    return [s for s in waiting if s.job.request.background and now - s.job.enqueued > BACKGROUND_MAX_WAIT_S]


def victim(head: W, running: Sequence[W]) -> W | None:
    """The running sequence that gives its slot up so ``head`` (a user request) can start: the most recently
    admitted background sequence; None when ``head`` is background itself or nothing running is."""
    if head.job.request.background:
        return None
    return next((s for s in reversed(running) if s.job.request.background), None)


def ttft_estimate_ms(
    wait_ms: float, prefill_ahead: int, own_prompt: float, prefill_chunk: int, step_ms: float
) -> float:
    """First token of a request arriving now: the wait for a slot, then the steps that prefill what is ahead of it
    in the batch and its own prompt (``prefill_chunk`` tokens a step, each step as long as the measured one), plus
    the step that samples its first token."""
    steps = math.ceil((prefill_ahead + own_prompt) / max(1, prefill_chunk)) + 1
    return wait_ms + steps * step_ms


def drain_seconds(count: int, parallel: int, rate: float | None, service_ms: float | None) -> float:
    """Time for ``count`` more sequences to finish at the measured service rate (completions per second); before
    any rate is measured, ``parallel`` slots each taking the mean service time (5 s when unknown)."""
    if rate is None or rate <= 0:
        rate = parallel / ((service_ms or 5000) / 1000)
    return count / rate


def retry_after_seconds(waiting: int, parallel: int, rate: float | None, service_ms: float | None) -> float:
    """Retry-After for a refused request: the time for the queue ahead of it plus itself to drain, 1-120 s."""
    return float(min(120, max(1, math.ceil(drain_seconds(waiting + 1, parallel, rate, service_ms)))))
