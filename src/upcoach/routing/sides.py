"""Where a request may run: the cloud endpoint it may use, the sides it tries in order, and per-side settings.

Fallback directions are asymmetric on purpose (``plan``): the cloud may always fall back to our local side
(nothing leaves), but local falls back to the cloud only when the decision said the content may go there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from upcoach.llm.base import Backend, ChatRequest, GenerationParams
from upcoach.modelstore.catalog import decoding_for
from upcoach.routing.policy import Decision


class Breaker(Protocol):
    async def allow(self) -> bool: ...
    async def record_success(self) -> None: ...
    async def record_failure(self) -> None: ...
    async def state(self) -> object: ...


@dataclass(frozen=True)
class RegionalCloud:
    """The cloud endpoint of one residency region, with its own breaker (one region failing leaves others)."""

    backend: Backend
    breaker: Breaker | None
    model: str


@dataclass(frozen=True, eq=False)
class Cloud:
    """The cloud a request may use: ``backend`` None when the user's region has no endpoint."""

    name: str
    backend: Backend | None
    breaker: Breaker | None
    model: str
    region: str | None


@dataclass(eq=False)
class Side:
    name: str
    backend: Backend
    is_cloud: bool
    strict: bool = False  # the one regeneration after a failed answer check, with a stricter prompt


def plan(decision: Decision, cloud: Cloud, local: list[Backend]) -> list[Side]:
    """The sides to try, in order: the decided side first, then the fallbacks the decision allows."""
    local_sides = [Side(backend_name(b), b, False) for b in local]
    cloud_side = [Side(cloud.name, cloud.backend, True)] if cloud.backend is not None else []
    if decision.target == "cloud":
        return cloud_side + local_sides
    return local_sides + (cloud_side if decision.cloud_allowed else [])


def constrained(chat: ChatRequest) -> bool:
    """Answers a grammar or the caller's format shapes are not coaching prose: the answer checks do not apply."""
    return (
        chat.grammar is not None
        or chat.prompt is not None
        or chat.response_format is not None
        or (chat.tools is not None and chat.tools.active)
    )


def local_params(params: GenerationParams, backend: Backend) -> GenerationParams:
    """The serving model's decoding settings from the catalog (temperature only when the caller chose none)."""
    decoding = decoding_for(backend.info().model)
    temperature = decoding.temperature if params.model_temperature else params.temperature
    return replace(params, temperature=temperature, repeat_penalty=decoding.repeat_penalty)


def backend_name(backend: Backend) -> str:
    return backend.info().name
