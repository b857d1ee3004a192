"""POST /api/ai/security/scan: what the checks that run before every chat request see in a text."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from upcoach.api.hybrid_schemas import ScanOut
from upcoach.errors import InvalidRequest
from upcoach.privacy import special_category
from upcoach.security import pii
from upcoach.security.guard import Refusal
from upcoach.services import Services

router = APIRouter(prefix="/api/ai/security")


class ScanRequest(BaseModel):
    text: str = Field(min_length=1, max_length=32_000)
    # The chat role the text would arrive in: a system prompt's instructions are read as instructions.
    role: Literal["system", "developer", "user", "assistant", "tool"] = "user"


@router.post("/scan", response_model=ScanOut)
async def scan(body: ScanRequest, request: Request) -> dict[str, object]:
    services: Services = request.app.state.services
    guard = services.hybrid.guard
    assert guard is not None
    check = "injection"
    try:
        injection = guard.injection.scan(body.text)
        check = "special_category"
        special = special_category.detect_special_categories(body.text, body.role)
        check = "pii"
        entities = pii.detect(body.text)
    except ValueError as exc:
        if check != "pii":
            raise await _refused(guard, check, exc) from exc
        # The PII detector refuses inputs it cannot scan in bounded time: the caller's text, not our fault.
        raise InvalidRequest(f"text cannot be scanned for personal data: {exc}", param="text") from exc
    except Exception as exc:  # a crashed detector is a 503 like on the chat routes, never a 500 or a partial result
        raise await _refused(guard, check, exc) from exc
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


async def _refused(guard: object, check: str, exc: Exception) -> Exception:
    refusal = Refusal(check, type(exc).__name__, f"scan-{uuid.uuid4().hex}", None, "scan")
    return await guard.refuse(refusal)  # type: ignore[attr-defined,no-any-return]
