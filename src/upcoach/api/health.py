"""Liveness and readiness."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from upcoach.services import Services

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    problems: list[str] = []
    if services.local is None:
        problems.append(services.local_problem or "local model is not loaded")
    else:
        health = await services.local.health()
        if not health.ok and health.reason != "queue full":
            problems.append(health.reason)
    try:
        await services.db.ping()
    except Exception as exc:  # readiness reports any storage failure instead of raising it
        problems.append(f"database unreachable: {type(exc).__name__}")
    if not os.access(services.settings.data_dir, os.W_OK):
        problems.append(f"data folder {services.settings.data_dir} is not writable")
    if problems:
        return JSONResponse({"status": "unavailable", "reasons": problems}, status_code=503)
    assert services.local is not None
    return JSONResponse({"status": "ready", "model": services.local_model_id, "local": services.local.info().details})
