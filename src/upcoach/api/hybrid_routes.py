"""The plan's hybrid API: process a coaching request, ask for a routing decision, read usage and cost."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from upcoach.api.deps import RECORD_READERS, caller
from upcoach.api.disconnect import unless_disconnected
from upcoach.api.errors import error_body
from upcoach.api.hybrid_schemas import (
    HybridProcessRequest,
    ProcessOut,
    RecordPage,
    RouteOut,
    UsageSummaryOut,
    outcome_body,
    record_body,
    route_body,
)
from upcoach.api.offline import OFFLINE_ERRORS, answer_offline, hybrid_body
from upcoach.api.service_schemas import json_or_stream
from upcoach.api.times import as_utc
from upcoach.errors import InvalidRequest, UpcoachError
from upcoach.routing.engine import Event
from upcoach.security.acting import ACT, REQUESTS
from upcoach.security.auth import principal_of
from upcoach.security.keys import Role
from upcoach.services import Services

router = APIRouter(prefix="/api/ai")
# Usage and request records: their readers include auditors, who may not chat.
records_router = APIRouter(prefix="/api/ai", dependencies=[Depends(caller(*RECORD_READERS))])

# Who sees usage summed over every user when they name nobody; everyone else sees one user's.
SERVICE_WIDE = (Role.admin, Role.auditor)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.post("/hybrid/process", response_model=None, responses=json_or_stream(ProcessOut))
async def process(body: HybridProcessRequest, request: Request) -> JSONResponse | StreamingResponse:
    services = _services(request)
    engine_request = body.to_engine(
        f"req_{uuid.uuid4().hex}", await services.subject(request, ACT), services.token_cap(request, body.max_tokens)
    )
    started = time.perf_counter()
    sse_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    try:
        if not body.stream:
            outcome = await unless_disconnected(request, services.hybrid.process(engine_request))
            return JSONResponse(outcome_body(outcome))
        events = services.hybrid.stream(engine_request)
        await anext(events)  # admitted: routing and admission errors still answer with their status code
    except OFFLINE_ERRORS as exc:
        # No model can answer (local and cloud both out): the strategies library does, and says so.
        answer = await answer_offline(
            services, engine_request.messages, exc, request_id=engine_request.request_id, user_id=engine_request.user_id
        )
        offline = hybrid_body(answer, engine_request.request_id, exc, (time.perf_counter() - started) * 1000)
        if not body.stream:
            return JSONResponse(offline)
        return StreamingResponse(_offline_sse(offline), media_type="text/event-stream", headers=sse_headers)
    return StreamingResponse(_sse(events), media_type="text/event-stream", headers=sse_headers)


async def _offline_sse(body: dict[str, object]) -> AsyncIterator[bytes]:
    yield _frame("token", {"content": body["response"]["content"]})  # type: ignore[index]
    yield _frame("done", body)


def _frame(event: str, payload: object) -> bytes:
    return f"event: {event}\ndata: ".encode() + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


async def _sse(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    """``token`` events with {"content"}, then one ``done`` event with the whole response (metrics, routing)."""
    try:
        async for event in events:
            if event.outcome is not None:
                yield _frame("done", outcome_body(event.outcome))
                break
            if event.text:
                yield _frame("token", {"content": event.text})
    except UpcoachError as exc:
        yield _frame("error", error_body(exc.message, type_=exc.type, code=exc.code, param=exc.param))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@router.post("/hybrid/route", response_model=RouteOut)
async def route(body: HybridProcessRequest, request: Request) -> dict[str, object]:
    services = _services(request)
    decision, _, state, _ = await services.hybrid.route(body.to_engine("route", await services.subject(request, ACT)))
    return route_body(decision, state)


@records_router.get("/usage/summary", response_model=UsageSummaryOut)
async def usage_summary(
    request: Request,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a timezone")] = None,
    user: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    if since is not None and since.utcoffset() is None:
        raise InvalidRequest("since must carry a timezone, e.g. 2026-11-25T00:00:00Z", param="since")
    if since is not None:
        since = as_utc(since, "since")
    services = _services(request)
    principal = principal_of(request)
    named = user is not None or bool(request.headers.get("x-user-id"))
    if not named and principal is not None and (principal.via == "dev" or principal.role in SERVICE_WIDE):
        subject = None  # the service-wide view
    else:
        subject = await services.subject(request, REQUESTS, named=user)
    summary = await services.requests.summary(user_id=subject, since=since)
    return JSONResponse(
        {
            "total": summary.total,
            "byMode": summary.by_mode,
            "localShare": summary.local_share,
            "fallbacks": summary.fallbacks,
            "errors": summary.errors,
            "costIncurredUsd": round(summary.cost_incurred_usd, 8),
            "cloudEquivalentUsd": round(summary.cloud_equivalent_usd, 8),
            "costAvoidedUsd": round(summary.cost_avoided_usd, 8),
            "promptTokens": summary.prompt_tokens,
            "completionTokens": summary.completion_tokens,
        }
    )


@records_router.get("/requests", response_model=RecordPage)
async def list_requests(
    request: Request,
    user: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, object]:
    """One user's request records (the caller's, or a named user's: the ``requests`` scope), newest first."""
    services = _services(request)
    subject = await services.subject(request, REQUESTS, named=user)
    records = await services.requests.list(user_id=subject, limit=limit + 1, offset=offset)
    page, has_more = records[:limit], len(records) > limit
    return {
        "object": "list",
        "data": [record_body(record) for record in page],
        "has_more": has_more,
        "next_offset": offset + len(page) if has_more else None,
    }
