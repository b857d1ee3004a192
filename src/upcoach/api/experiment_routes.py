"""A/B experiments: admins create, stop and read them; the app asks for a user's variant and reports outcomes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.errors import error_responses
from upcoach.api.idempotency import IDEMPOTENT
from upcoach.api.user_data_schemas import (
    AssignmentOut,
    EventStoredOut,
    ExperimentList,
    ExperimentOut,
    ExperimentResultsOut,
)
from upcoach.errors import InvalidRequest, Unavailable
from upcoach.experiments.assignment import Variant
from upcoach.experiments.service import KEY_FORMAT, Experiments, Metric
from upcoach.security.acting import ACT
from upcoach.security.auth import Principal
from upcoach.security.keys import Role
from upcoach.services import Services

router = APIRouter(prefix="/api/experiments", tags=["experiments"])

Admin = Annotated[Principal, Depends(caller(Role.admin))]
AppUser = Annotated[Principal, Depends(caller(*CHAT_ROLES))]
Key = Annotated[str, Path(pattern=f"^(?:{KEY_FORMAT.pattern})$", description="a-z, 0-9, '_', '.', '-'")]
NOT_FOUND = error_responses(404)
# NUL cannot be stored in PostgreSQL text; refusing it here keeps a 400 from becoming a driver error.
Text = r"^[^\x00]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantIn(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=Text)
    # Bounded so that the sum of weights stays finite.
    weight: float = Field(default=1.0, gt=0, le=1_000_000)
    config: dict[str, object] = Field(default_factory=dict)


class MetricIn(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=Text)
    kind: Literal["rate", "mean"] = "rate"
    min: float | None = Field(default=None, ge=-1e9, le=1e9)
    max: float | None = Field(default=None, ge=-1e9, le=1e9)

    def to_metric(self) -> Metric:
        if self.kind == "rate":
            return Metric(
                self.name, "rate", 0.0 if self.min is None else self.min, 1.0 if self.max is None else self.max
            )
        if self.min is None or self.max is None:
            # Without bounds one user could move a mean arbitrarily far: no noise scale would protect them.
            raise InvalidRequest(
                f"metrics: mean metric {self.name!r} needs min and max (values are clipped to them in the DP export)",
                param="metrics",
            )
        return Metric(self.name, "mean", self.min, self.max)


class ExperimentIn(_Strict):
    key: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1000, pattern=Text)
    variants: list[VariantIn] = Field(min_length=2, max_length=20)
    # A bare name is a rate metric (share of users with an event value > 0).
    metrics: list[MetricIn | Annotated[str, Field(min_length=1, max_length=64, pattern=Text)]] = Field(
        min_length=1, max_length=20
    )


class EventIn(_Strict):
    metric: str = Field(min_length=1, max_length=64, pattern=Text)
    # Bounded: sums of squares over many users must stay finite.
    value: float = Field(default=1.0, ge=-1e9, le=1e9)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _experiments(request: Request) -> Experiments:
    experiments = getattr(_services(request), "experiments", None)
    if experiments is None:
        raise Unavailable("experiments are not available on this server")
    return experiments  # type: ignore[no-any-return]


async def _user(request: Request) -> str:
    return await _services(request).subject(request, ACT)


async def _audit(request: Request, principal: Principal, action: str, key: str, details: dict[str, object]) -> None:
    audit = _services(request).audit
    if audit is not None:
        await audit.append(principal.user_id, principal.role.value, action, target=key, details=details)


@router.post("", status_code=201, response_model=ExperimentOut, responses=error_responses(409))
async def create_experiment(body: ExperimentIn, request: Request, principal: Admin) -> dict[str, object]:
    metrics = [MetricIn(name=m) if isinstance(m, str) else m for m in body.metrics]
    experiment = await _experiments(request).create(
        body.key,
        body.description,
        [Variant(v.name, v.weight, v.config) for v in body.variants],
        [m.to_metric() for m in metrics],
        principal.user_id,
    )
    await _audit(request, principal, "experiment.created", experiment.key,
                 {"variants": [v.name for v in experiment.variants]})  # fmt: skip
    return experiment.to_json()


@router.get("", response_model=ExperimentList)
async def list_experiments(request: Request, _: Admin) -> dict[str, object]:
    return {"object": "list", "data": [e.to_json() for e in await _experiments(request).list()]}


@router.post("/{key}/stop", response_model=ExperimentOut, responses=NOT_FOUND)
async def stop_experiment(key: Key, request: Request, principal: Admin) -> dict[str, object]:
    experiment = await _experiments(request).stop(key)
    await _audit(request, principal, "experiment.stopped", key, {})
    return experiment.to_json()


@router.get("/{key}/results", response_model=ExperimentResultsOut, responses=NOT_FOUND)
async def experiment_results(key: Key, request: Request, principal: Admin, dp: bool = False) -> JSONResponse:
    results = await _experiments(request).results(key, dp=dp)
    if dp:
        # Each DP export spends privacy budget: the trail shows how often aggregates left the service.
        await _audit(request, principal, "experiment.exported", key, {"dp": True})
    return JSONResponse(results)


@router.get("/{key}/assignment", response_model=AssignmentOut, responses=NOT_FOUND)
async def assignment(key: Key, request: Request, _: AppUser) -> dict[str, object]:
    result = await _experiments(request).assignment(key, await _user(request))
    return {"variant": result.variant.name, "config": result.variant.config}


@router.post(
    "/{key}/events", status_code=202, response_model=EventStoredOut, responses=NOT_FOUND, dependencies=IDEMPOTENT
)
async def post_event(key: Key, body: EventIn, request: Request, _: AppUser) -> dict[str, object]:
    """202 either way: the app need not know whether this user opted in to analytics; ``stored`` says."""
    stored = await _experiments(request).record_event(key, await _user(request), body.metric, body.value)
    return {"stored": stored}
