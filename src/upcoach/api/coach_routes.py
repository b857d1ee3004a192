"""Coaching API: suggestion chips, the strategies library (search, signed offline bundle, signing key).

Chips never reach the cloud: they are written by the local side (the in-process model, or a self-hosted pool in
the ``local`` role) or taken from the library, whatever the cloud settings. The conversation passes the same guard
as a chat request first (every role; a check that cannot run is a 503 ``security_check_failed``); signs of
self-harm give support chips, the ``self_harm`` flag and the crisis resources. Wire shapes are camelCase like the
rest of the plan's API.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, field_validator

from upcoach.api.coach_schemas import BundleOut, StrategyOut, StrategySearchOut, SuggestionsOut
from upcoach.api.errors import error_responses
from upcoach.api.hybrid_schemas import HybridMessage, _Camel
from upcoach.api.model_schemas import SigningKeyOut
from upcoach.coaching.chips import CHIP_STYLES, ChipsResult
from upcoach.coaching.library import Strategy
from upcoach.coaching.service import Coach
from upcoach.errors import NotFound, PromptInjection, Unavailable
from upcoach.language import identify
from upcoach.llm.base import ChatMessage
from upcoach.privacy.crisis import crisis_resources
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/api/coach")

LOCALE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$"
# PostgreSQL text cannot hold NUL: refuse it up front (400) instead of letting the database fail (500).
NO_NUL = r"^[^\x00]*$"
ChipStyle = Literal["default", "action", "question", "feeling"]
assert set(CHIP_STYLES) == set(ChipStyle.__args__)  # type: ignore[attr-defined]


class SuggestionsRequest(_Camel):
    messages: list[HybridMessage] = Field(min_length=1, max_length=256)
    count: int = Field(default=3, ge=1, le=5)
    locale: str = Field(default="en", pattern=LOCALE_PATTERN)
    # A prompt-template id: what an experiment on chip wording assigns per variant.
    style: ChipStyle = "default"
    max_latency_ms: float | None = Field(default=None, ge=10, le=60_000)

    @field_validator("messages")
    @classmethod
    def _has_turn(cls, value: list[HybridMessage]) -> list[HybridMessage]:
        if not any(m.role in ("user", "assistant") for m in value):
            raise ValueError("at least one user or assistant message is required")
        return value


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _coach(request: Request) -> Coach:
    coach = getattr(_services(request), "coach", None)
    if coach is None:
        raise Unavailable("the coaching library is not loaded yet")
    return coach  # type: ignore[no-any-return]


def _crisis(body: SuggestionsRequest) -> str:
    """The crisis resources for the locale's country, in the language of the latest message."""
    last = next((m.content for m in reversed(body.messages) if m.role == "user"), body.messages[-1].content)
    return crisis_resources(identify(last, body.locale), locale=body.locale)


def _chips_body(result: ChipsResult, body: SuggestionsRequest, request_id: str, self_harm: bool) -> dict[str, Any]:
    return {
        # First, as in every answer to signs of self-harm: where to find help now.
        "crisisResources": _crisis(body) if self_harm else None,
        "suggestions": [{"text": chip.text, "source": chip.source} for chip in result.chips],
        "source": result.source,
        "model": result.model,
        "latencyMs": round(result.latency_ms, 2),
        "modelLatencyMs": round(result.model_latency_ms, 2) if result.model_latency_ms is not None else None,
        "reason": result.reason,
        "strategyIds": result.strategy_ids,
        "style": body.style,
        "locale": result.locale,
        "count": len(result.chips),
        "requestId": request_id,
        "flags": ["self_harm"] if self_harm else [],
        # Written in the background right after the answer (coaching/chips_ahead.py), not for this request.
        "precomputed": result.precomputed,
    }


@router.post("/suggestions", response_model=SuggestionsOut)
async def suggestions(body: SuggestionsRequest, request: Request) -> dict[str, Any]:
    services = _services(request)
    coach = _coach(request)
    request_id = f"chips_{uuid.uuid4().hex}"
    user_id = await services.subject(request, ACT)
    messages = tuple(ChatMessage(m.role, m.content) for m in body.messages)
    inspection = await services.hybrid.guard.check(messages, request_id=request_id, user_id=user_id, endpoint="chips")
    if inspection.injection_verdict == "block":
        if services.audit is not None:
            await services.audit.append(
                user_id, "user", "request.blocked", target=request_id,
                details={"flags": ["prompt_injection_blocked"], "endpoint": "chips"},
            )  # fmt: skip
        raise PromptInjection("the conversation looks like a prompt injection and was refused", param="messages")
    result = None
    if coach.ahead is not None and not inspection.self_harm:
        started = time.perf_counter()
        ahead = await coach.ahead.lookup(
            user_id, messages, count=body.count, locale=body.locale, style=body.style,
            wait_ms=body.max_latency_ms or coach.chips.budget_ms,
        )  # fmt: skip
        if ahead is not None:
            result = await coach.chips.topped_up(ahead, messages, body.count, body.style)
            result.latency_ms = (time.perf_counter() - started) * 1000
    if result is None:
        result = await coach.chips.suggest(
            coach.chips_backend(),
            messages,
            count=body.count,
            locale=body.locale,
            style=body.style,
            budget_ms=body.max_latency_ms,
            self_harm=inspection.self_harm,
            request_id=request_id,
        )
    return _chips_body(result, body, request_id, inspection.self_harm)


def strategy_body(strategy: Strategy) -> dict[str, Any]:
    return strategy.to_json()


@router.get("/strategies", response_model=StrategySearchOut)
async def search_strategies(
    request: Request,
    q: Annotated[str | None, Query(max_length=500, pattern=NO_NUL, description="free text; best matches first")] = None,
    category: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
    tag: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    locale: Annotated[
        str | None,
        Query(
            max_length=16,
            pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
            description="only strategies in this locale's language (pt-BR: pt); without it, a query is read in "
            "its own language and a listing has every language",
        ),
    ] = None,
) -> dict[str, Any]:
    coach = _coach(request)
    language = locale if locale else (identify(q) if q else None)
    hits = await coach.strategies.search(q, category=category, tag=tag, limit=limit, language=language)
    current = coach.strategies.current
    return {
        "data": [{**strategy_body(hit.strategy), "score": round(hit.score, 6)} for hit in hits],
        "count": len(hits),
        "version": current.version if current else None,
    }


@router.get(
    "/strategies/bundle",
    response_model=None,
    responses={200: {"model": BundleOut}, 304: {"description": "not modified: the If-None-Match ETag is current"}},
)
async def strategies_bundle(
    request: Request,
    since: Annotated[
        str | None, Query(max_length=64, pattern=NO_NUL, description="a version the app already holds")
    ] = None,
) -> Response:
    built = await _coach(request).bundles.build(since or None)
    headers = {"ETag": built.etag, "Cache-Control": "no-cache", "X-Bundle-Version": built.version}
    if _matches(request.headers.get("if-none-match"), built.etag):
        return Response(status_code=304, headers=headers)
    return Response(built.body, media_type="application/json", headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison, a list of tags or ``*``."""
    if not if_none_match:
        return False
    candidates = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in candidates)


@router.get("/strategies/signing-key", response_model=SigningKeyOut)
async def signing_key(request: Request) -> dict[str, str]:
    return _coach(request).signing_key.public_json()


@router.get("/strategies/{strategy_id}", response_model=StrategyOut, responses=error_responses(404))
async def get_strategy(
    strategy_id: Annotated[str, Path(max_length=64, pattern=NO_NUL)], request: Request
) -> JSONResponse:
    found = await _coach(request).strategies.get_many([strategy_id])
    if not found:
        raise NotFound(f"strategy {strategy_id!r} does not exist", param="strategy_id")
    return JSONResponse(strategy_body(found[0]))
