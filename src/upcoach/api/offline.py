"""Offline answers at the API layer: when the hybrid engine has no model left to ask, reply from the strategies
library instead of failing, in each API's own shape, and say so (``processingMode: "offline"``).

Only "nobody can answer" errors qualify: the local side unavailable and the cloud failing or not allowed. Bad
requests, refused prompt injections and failed security checks keep their status codes, and so does a full queue
(429, retry shortly), except for a message with signs of self-harm: that one is answered now, never "try later".
The library answer passes the same guard as a model's: self-harm starts with the crisis resources and carries the
``self_harm`` flag, and a check that cannot run refuses (503 ``security_check_failed``).
"""

from __future__ import annotations

import logging
from typing import Any

from upcoach.coaching.offline import OFFLINE_BACKEND, OfflineAnswer, offline_answer
from upcoach.errors import BackendError, Overloaded, Unavailable, UpcoachError
from upcoach.llm.base import ChatMessage
from upcoach.services import Services

log = logging.getLogger(__name__)

# What the routes hand to ``answer_offline``; a full queue only when the conversation shows signs of self-harm.
OFFLINE_ERRORS = (Unavailable, BackendError, Overloaded)


async def answer_offline(
    services: Services, messages: tuple[ChatMessage, ...], error: UpcoachError, *, request_id: str, user_id: str | None
) -> OfflineAnswer:
    """The library's answer, or ``error`` re-raised when the library cannot answer either."""
    coach = services.coach
    if coach is None:
        raise error
    inspection = await services.hybrid.guard.check(messages, request_id=request_id, user_id=user_id, endpoint="offline")
    if isinstance(error, Overloaded) and not inspection.self_harm:
        raise error
    try:
        return await offline_answer(coach.strategies, messages, self_harm=inspection.self_harm)
    except Exception:
        log.exception("offline answer failed")
        raise error from None


def hybrid_body(answer: OfflineAnswer, request_id: str, error: UpcoachError, latency_ms: float) -> dict[str, Any]:
    """The shape of ``outcome_body`` (api/hybrid_schemas.py), plus an ``offline`` block."""
    return {
        "response": {"role": "assistant", "content": answer.text},
        "processingMode": "offline",
        "metrics": {
            "latency": round(latency_ms, 2),
            "firstTokenLatency": None,
            "tokensGenerated": 0,
            "promptTokens": 0,
            "costsIncurred": 0.0,
            "costAvoided": 0.0,
        },
        "routing": {
            "backend": OFFLINE_BACKEND,
            "decision": None,
            "reasons": [f"{error.code}: {error.message}", answer.reason],
            "fallbackUsed": True,
            "complexity": None,
            "redactions": {},
            "flags": list(answer.flags),
        },
        "finishReason": "stop",
        "requestId": request_id,
        "offline": {"reason": answer.reason, "strategyIds": answer.strategy_ids, "error": error.code},
    }


def openai_extension(answer: OfflineAnswer, error: UpcoachError) -> dict[str, Any]:
    """Added to an OpenAI completion as ``upcoach``: OpenAI clients ignore unknown fields."""
    return {
        "processingMode": "offline",
        "reason": answer.reason,
        "strategyIds": answer.strategy_ids,
        "error": error.code,
        "flags": list(answer.flags),
    }
