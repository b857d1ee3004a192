"""POST /api/ai/security/scan: what the checks that run before every chat request see in a text."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from upcoach.errors import InvalidRequest
from upcoach.privacy.special_category import detect_special_categories
from upcoach.security import pii
from upcoach.services import Services

router = APIRouter(prefix="/api/ai/security")


class ScanRequest(BaseModel):
    text: str = Field(min_length=1, max_length=32_000)
    # The chat role the text would arrive in: a system prompt's instructions are read as instructions.
    role: Literal["system", "developer", "user", "assistant", "tool"] = "user"


@router.post("/scan")
async def scan(body: ScanRequest, request: Request) -> dict[str, object]:
    services: Services = request.app.state.services
    guard = services.hybrid.guard
    assert guard is not None
    injection = guard.injection.scan(body.text)
    special = detect_special_categories(body.text, body.role)
    try:
        entities = pii.detect(body.text)
    except ValueError as exc:  # the detector refuses inputs it cannot scan in bounded time
        raise InvalidRequest(f"text cannot be scanned for personal data: {exc}", param="text") from exc
    return {
        "injection": {
            "verdict": injection.verdict,
            "score": round(injection.score, 4),
            "signals": list(injection.signals),
        },
        # Positions and types only: the caller already has the text, and responses get logged.
        "pii": {"entities": [{"type": e.type, "start": e.start, "end": e.end} for e in entities]},
        "specialCategory": {"categories": list(special.categories), "selfHarm": special.self_harm},
    }
