"""A local backend whose model can be replaced while it serves: the zero-downtime half of model updates.

``SwappableBackend`` implements the llm Backend protocol by delegating to the engine of the current model
version. ``swap(new)`` makes every request that starts afterwards use ``new`` at once, while streams already
running on the old engine finish there (each slot counts its open streams); when the last one closes, the old
engine stops and its plaintext is released. No request is ever sent to an engine that is stopping, so an update
fails none.

For a version A/B test a candidate engine runs beside the current one; ``Experiment.arm`` chooses, per request,
which of the two answers, and ``Experiment.observe`` sees every completion with the version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, Protocol

from upcoach.errors import Unavailable
from upcoach.llm.base import BackendInfo, ChatRequest, Chunk, Completion, Health, collect

log = logging.getLogger(__name__)

# How long a retired engine may keep serving streams that started before the swap before it is stopped anyway.
DRAIN_TIMEOUT_SECONDS = 300.0

Arm = Literal["active", "candidate"]


class Engine(Protocol):
    """What a slot needs from an engine: the Backend protocol plus ``stop()``."""

    async def chat(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]: ...

    async def health(self) -> Health: ...

    def info(self) -> BackendInfo: ...

    async def stop(self) -> None: ...


class Experiment(Protocol):
    def arm(self, request: ChatRequest) -> Arm: ...

    def observe(self, version_id: str, request: ChatRequest, completion: Completion) -> None: ...


@dataclass
class Loaded:
    """A started engine serving one model version, and what to release after it stops (its plaintext file).

    ``version_id`` is the registry id (``name@version``); a model configured by path has none.
    """

    engine: Engine
    version_id: str | None
    name: str
    release: Callable[[], Awaitable[None]] | None = None

    async def stop(self) -> None:
        try:
            await self.engine.stop()
        finally:
            if self.release is not None:
                await self.release()


@dataclass
class _Slot:
    loaded: Loaded
    open_streams: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def enter(self) -> None:
        self.open_streams += 1
        self.idle.clear()

    def leave(self) -> None:
        self.open_streams -= 1
        if self.open_streams == 0:
            self.idle.set()


class SwappableBackend:
    kind = "local"

    def __init__(self, current: Loaded | None = None) -> None:
        self._current = _Slot(current) if current is not None else None
        self._candidate: _Slot | None = None
        self._experiment: Experiment | None = None
        # What health() reports while nothing serves (loading, or why the load failed).
        self.problem = "no local model is loaded"

    # ---- state -------------------------------------------------------------------------------------------------
    @property
    def current(self) -> Loaded | None:
        return self._current.loaded if self._current is not None else None

    @property
    def candidate(self) -> Loaded | None:
        return self._candidate.loaded if self._candidate is not None else None

    @property
    def open_streams(self) -> int:
        return sum(slot.open_streams for slot in (self._current, self._candidate) if slot is not None)

    # ---- changes -----------------------------------------------------------------------------------------------
    async def swap(self, new: Loaded) -> Loaded | None:
        """Serve ``new`` from now on; return the previous model once its streams ended and its engine stopped."""
        old = self._current
        self._current = _Slot(new)
        if old is None:
            return None
        await _retire(old)
        return old.loaded

    def start_experiment(self, candidate: Loaded, experiment: Experiment) -> None:
        if self._candidate is not None:
            raise RuntimeError("an experiment is already running")
        self._candidate = _Slot(candidate)
        self._experiment = experiment

    async def stop_experiment(self, *, promote: bool = False) -> Loaded | None:
        """End the A/B test. ``promote``: the candidate becomes current and the old current retires; otherwise the
        candidate retires. Returns the model that retired (stopped)."""
        candidate = self._candidate
        self._candidate = None
        self._experiment = None
        if candidate is None:
            return None
        if promote:
            old = self._current
            self._current = candidate
            if old is None:
                return None
            await _retire(old)
            return old.loaded
        await _retire(candidate)
        return candidate.loaded

    async def aclose(self) -> None:
        """Stop every engine (service shutdown): open streams get the drain timeout like in a swap."""
        slots = [slot for slot in (self._candidate, self._current) if slot is not None]
        self._candidate = self._current = None
        self._experiment = None
        for slot in slots:
            await _retire(slot)

    # ---- Backend protocol --------------------------------------------------------------------------------------
    def _pick(self, request: ChatRequest) -> _Slot:
        current, candidate, experiment = self._current, self._candidate, self._experiment
        if current is None:
            raise Unavailable("no local model is loaded")
        if candidate is not None and experiment is not None and experiment.arm(request) == "candidate":
            return candidate
        return current

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        # Choosing the slot and counting the stream happen with no await in between: a swap cannot slip in and
        # stop the engine this request was given.
        slot = self._pick(request)
        slot.enter()
        try:
            async with aclosing(slot.loaded.engine.stream(request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    if chunk.final is not None:
                        # Counted before the final chunk is handed on: a consumer may close this stream as soon as
                        # it has the final chunk (the answer checks do), and nothing after the yield would run.
                        # Background work (chips written ahead) is not a user's request: the comparison counts
                        # answers people asked for, once each.
                        experiment = None if request.background else self._experiment
                        if experiment is not None and slot.loaded.version_id is not None:
                            experiment.observe(slot.loaded.version_id, request, chunk.final)
                    yield chunk
        finally:
            slot.leave()

    async def chat(self, request: ChatRequest) -> Completion:
        completion = await collect(self.stream(request))
        if completion is None:
            raise Unavailable("local generation ended without a result")
        return completion

    async def health(self) -> Health:
        if self._current is None:
            return Health(False, self.problem)
        return await self._current.loaded.engine.health()

    def info(self) -> BackendInfo:
        if self._current is None:
            return BackendInfo(name="local:none", kind="local", model="")
        loaded = self._current.loaded
        info = loaded.engine.info()
        details = {**info.details, "version": loaded.version_id}
        if self._candidate is not None:
            details["candidate_version"] = self._candidate.loaded.version_id
        return BackendInfo(name=info.name, kind="local", model=info.model, context_size=info.context_size,
                           details=details)  # fmt: skip


async def _retire(slot: _Slot) -> None:
    """Wait for the slot's open streams (bounded), then stop its engine."""
    if slot.open_streams:
        try:
            await asyncio.wait_for(slot.idle.wait(), DRAIN_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning(
                "%d streams still open on %s after %.0f s: stopping it anyway",
                slot.open_streams, slot.loaded.version_id or slot.loaded.name, DRAIN_TIMEOUT_SECONDS,
            )  # fmt: skip
    await slot.loaded.stop()
