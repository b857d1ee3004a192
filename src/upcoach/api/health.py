"""Liveness and readiness.

``/readyz`` answers everyone with the status alone (``{"status": "ready"}`` 200, ``{"status": "unavailable"}``
503): enough for a load balancer or an orchestrator. Why it is unavailable (data folder path, database error
types, pool member URLs) and the live engine figures are for admins and auditors (and local development with
auth off), who send their credentials as on any other route.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from upcoach.api.service_schemas import HealthOut, ReadyOut, VersionOut
from upcoach.observability.version import build_id, package_version
from upcoach.security.auth import Authenticator, presents_credentials, require
from upcoach.security.keys import Role
from upcoach.services import Services
from upcoach.shutdown import Drain

router = APIRouter()

DETAIL_ROLES = (Role.admin, Role.auditor)


@dataclass
class Readiness:
    """Whether this server should take traffic; ``reasons`` and ``details`` are for operators only."""

    reasons: list[str] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.reasons


async def readiness(services: Services, drain: Drain | None = None) -> Readiness:
    """Every condition of readiness, in one place: a new condition is one more ``reasons.append`` here."""
    result = Readiness()
    if drain is not None and drain.draining:
        # First, and without touching anything else: a load balancer must see this the moment SIGTERM arrives.
        result.reasons.append("shutting down: running requests are finishing")
        return result
    if services.local is None:
        result.reasons.append(services.local_problem or "local model is not loaded")
    else:
        health = await services.local.health()
        if not health.ok and health.reason != "queue full":
            result.reasons.append(health.reason)
    try:
        await services.db.ping()
    except Exception as exc:  # readiness reports any storage failure instead of raising it
        result.reasons.append(f"database unreachable: {type(exc).__name__}")
    if services.records is not None and services.records.backlog > services.settings.records_backlog_max:
        result.reasons.append(
            f"records_backlog: {services.records.backlog} request records not yet written "
            f"(more than UPCOACH_RECORDS_BACKLOG_MAX={services.settings.records_backlog_max})"
        )
    if not os.access(services.settings.data_dir, os.W_OK):
        result.reasons.append(f"data folder {services.settings.data_dir} is not writable")
    # The worker's process id: which of `serve --workers N` answered (for operators and the workers' tests).
    result.details = {"worker": os.getpid()}
    if result.ready and services.local is not None:
        result.details |= {"model": services.local_model_id, "local": services.local.info().details}
    return result


async def _may_see_details(request: Request) -> bool:
    authenticator = request.app.state.authenticator
    if not isinstance(authenticator, Authenticator):
        return False  # fail closed
    if authenticator.enabled and not presents_credentials(request):
        return False  # a prober: the status is all it needs
    # Credentials were sent: checked like anywhere else (a refused one is a 401, and counts against the address).
    principal = await authenticator.authenticate(request)
    return principal.via == "dev" or principal.role in DETAIL_ROLES


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready: take no traffic"}},
)
async def readyz(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    result = await readiness(services, getattr(request.app.state, "drain", None))
    status, code = ("ready", 200) if result.ready else ("unavailable", 503)
    if not await _may_see_details(request):
        return JSONResponse({"status": status}, status_code=code)
    if not result.ready:
        return JSONResponse({"status": status, "reasons": result.reasons, **result.details}, status_code=code)
    return JSONResponse({"status": status, **result.details}, status_code=code)


@router.get("/version", response_model=VersionOut, dependencies=[Depends(require(*DETAIL_ROLES))])
async def version(request: Request) -> dict[str, str | None]:
    """Which build, model and schema revision serve (admins and auditors, like /metrics)."""
    services: Services = request.app.state.services
    return {
        "version": package_version(),
        "build": build_id(),
        "model": services.local_model_id if services.local is not None else None,
        "schemaRevision": await services.db.schema_revision(),
    }
