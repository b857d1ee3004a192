"""Several OpenAI-compatible replicas used as one backend, so a deployment can outgrow one machine.

Why this shape: replicas of one model are interchangeable, so each request goes to the healthy member with the
fewest requests in flight (ties rotate): a cheap stand-in for "the one that answers first" that needs no knowledge
of each server's batching. A member that fails as a peer (unreachable, dropped connection, 5xx) before the first
token leaves the rotation and the request goes once to another member, so the user never notices a dead replica.
Only the health loop (GET /models) brings a member back: a dead replica then costs one failed attempt, not one
per request. Rate limits, timeouts and 4xx are not retried here: the hybrid engine above decides about those.
A member with its ``max_inflight`` calls in flight is passed over; when every healthy member is full the request
is refused at once (``Overloaded``, 429 with Retry-After) rather than queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from statistics import fmean

from upcoach.errors import BackendError, Overloaded, Unavailable
from upcoach.llm.base import BackendInfo, ChatRequest, Chunk, Completion, Health, collect
from upcoach.llm.openai_compat import SATURATED_RETRY_AFTER_S, OpenAICompatBackend, is_peer_failure

log = logging.getLogger(__name__)


@dataclass
class _Member:
    backend: OpenAICompatBackend
    healthy: bool = True
    reason: str = ""


class BackendPool:
    """A list of ``OpenAICompatBackend`` as one ``Backend``. ``start()`` runs the health loop; ``stop()`` ends it."""

    kind = "pool"

    def __init__(self, name: str, members: list[OpenAICompatBackend], health_interval: float = 5.0) -> None:
        if not members:
            raise ValueError("a pool needs at least one member")
        self.name = name
        self.health_interval = health_interval
        self._members = [_Member(backend) for backend in members]
        self._next = 0  # where the round robin among equally loaded members resumes
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._health_loop(), name=f"{self.name}-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        """Stop the health loop and close every member's client."""
        await self.stop()
        await asyncio.gather(*(member.backend.aclose() for member in self._members))

    async def check(self) -> None:
        """Probe every member once, concurrently. The health loop calls this; readiness checks may too."""
        results = await asyncio.gather(*(member.backend.probe() for member in self._members))
        for member, ok in zip(self._members, results, strict=True):
            if ok and not member.healthy:
                log.info("%s: %s is back in rotation", self.name, member.backend.name)
            if ok:
                member.healthy, member.reason = True, ""
            else:
                self._take_out(member, (await member.backend.health()).reason or "health probe failed")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await self.check()
            except Exception:  # one bad round must not end health checking for good
                log.exception("%s: health check failed", self.name)

    # ---- Backend interface ------------------------------------------------------------------------------------
    @property
    def members(self) -> Sequence[OpenAICompatBackend]:
        return [member.backend for member in self._members]

    def is_healthy(self, backend: OpenAICompatBackend) -> bool:
        return next(member.healthy for member in self._members if member.backend is backend)

    async def health(self) -> Health:
        outstanding = sum(member.backend.outstanding for member in self._members)
        if any(member.healthy for member in self._members):
            return Health(True, "", outstanding, 0)
        return Health(False, f"no healthy member ({self._reasons()})", outstanding, 0)

    def info(self) -> BackendInfo:
        members: list[dict[str, object]] = []
        for member in self._members:
            details = member.backend.info().details
            members.append({"name": member.backend.name, "healthy": member.healthy, "reason": member.reason, **details})
        healthy = [m for m in members if m["healthy"]]
        models = sorted({member.backend.model for member in self._members})
        return BackendInfo(
            name=self.name,
            kind="pool",
            model=",".join(models),
            details={
                "members": members,
                "healthy_members": len(healthy),
                "outstanding": sum(member.backend.outstanding for member in self._members),
                "ttft_ms_ewma": _mean(m["ttft_ms_ewma"] for m in healthy),
                "decode_tps_ewma": _mean(m["decode_tps_ewma"] for m in healthy),
            },
        )

    async def chat(self, request: ChatRequest) -> Completion:
        completion = await collect(self.stream(request))
        if completion is None:
            raise BackendError(f"{self.name}: the stream ended without a result", backend=self.name)
        return completion

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        member = self._pick(exclude=())
        if member is None:
            if any(m.healthy for m in self._members):
                raise Overloaded(f"{self.name}: every member has its limit of calls in flight; try again shortly",
                                 retry_after=SATURATED_RETRY_AFTER_S)  # fmt: skip
            raise Unavailable(f"{self.name}: no healthy member ({self._reasons()})")
        tried = [member]
        admitted = False
        while True:
            try:
                async with aclosing(member.backend.stream(request)) as chunks:
                    async for chunk in chunks:
                        if not chunk.text and chunk.final is None:
                            if admitted:
                                continue  # the retry's admission: the caller has committed already
                            admitted = True
                        yield chunk
                return
            except BackendError as exc:
                if not (exc.before_first_token and is_peer_failure(exc)):
                    raise
                self._take_out(member, exc.message)
                retry = self._pick(exclude=tried) if len(tried) == 1 else None
                if retry is None:
                    raise
                log.info("%s: retrying on %s after %s failed", self.name, retry.backend.name, member.backend.name)
                member = retry
                tried.append(member)

    # ---- internals --------------------------------------------------------------------------------------------
    def _pick(self, exclude: Sequence[_Member]) -> _Member | None:
        """The healthy member with the fewest requests in flight and room for one more; among equals, the next in
        rotation."""
        best: tuple[int, _Member] | None = None
        count = len(self._members)
        for offset in range(count):
            index = (self._next + offset) % count
            member = self._members[index]
            if not member.healthy or member in exclude or member.backend.saturated:
                continue
            if best is None or member.backend.outstanding < best[1].backend.outstanding:
                best = (index, member)
        if best is None:
            return None
        self._next = best[0] + 1
        return best[1]

    def _take_out(self, member: _Member, reason: str) -> None:
        if member.healthy:
            log.warning("%s: %s leaves rotation: %s", self.name, member.backend.name, reason)
        member.healthy, member.reason = False, reason

    def _reasons(self) -> str:
        return "; ".join(f"{member.backend.name}: {member.reason or 'unhealthy'}" for member in self._members)


def _mean(values: Iterable[object]) -> float | None:
    numbers = [v for v in values if isinstance(v, int | float)]
    return fmean(numbers) if numbers else None
