"""The voice journal: the app posts transcripts; users list, delete and read insights about their own entries.

A service (or admin) may do all of it for a user it names; a coach may list entries (scope ``journal``) and read
insights (scope ``insights``) of a client who granted that scope to them (security/acting.py)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.errors import error_responses
from upcoach.api.idempotency import IDEMPOTENT
from upcoach.api.times import as_utc
from upcoach.api.user_data_schemas import EntryOut, EntryPage, InsightsOut
from upcoach.coaching.journal import MAX_TRANSCRIPT_CHARS, Journal
from upcoach.errors import InvalidRequest, NotFound, Unavailable
from upcoach.security.acting import ACT, INSIGHTS, JOURNAL, Use
from upcoach.services import Services

router = APIRouter(prefix="/api/journal", tags=["journal"], dependencies=[Depends(caller(*CHAT_ROLES))])

ENTRY_ID = re.compile(r"[0-9a-f]{32}")
DEFAULT_INSIGHT_DAYS = 30


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    transcript: str = Field(min_length=1, max_length=MAX_TRANSCRIPT_CHARS)
    recorded_at: AwareDatetime = Field(alias="recordedAt")
    mood: int | None = Field(default=None, ge=1, le=5, description="1 (very low) to 5 (very good)")


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _journal(request: Request) -> Journal:
    journal = getattr(_services(request), "journal", None)
    if journal is None:
        raise Unavailable("the journal is not available on this server")
    return journal  # type: ignore[no-any-return]


async def _user(request: Request, use: Use) -> str:
    return await _services(request).subject(request, use)


def _bound(value: str | None, name: str, *, end: bool) -> datetime | None:
    """A date (whole day; ``to`` includes it) or an ISO datetime (UTC unless it carries a zone)."""
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{name} must be a date (2026-11-25) or an ISO 8601 datetime", param=name) from exc
    return as_utc(moment, name)


@router.post("/entries", status_code=201, response_model=EntryOut, dependencies=IDEMPOTENT)
async def add_entry(body: EntryIn, request: Request) -> dict[str, object]:
    as_utc(body.recorded_at, "recordedAt")  # the entry keeps the offset it was recorded with; UTC must exist too
    entry = await _journal(request).add(await _user(request, ACT), body.transcript, body.recorded_at, body.mood)
    return entry.to_json()


@router.get("/entries", response_model=EntryPage)
async def list_entries(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, object]:
    entries, has_more = await _journal(request).page(await _user(request, JOURNAL), limit=limit, offset=offset)
    return {
        "object": "list",
        "data": [entry.to_json() for entry in entries],
        "has_more": has_more,
        "next_offset": offset + len(entries) if has_more else None,
    }


@router.delete("/entries/{entry_id}", status_code=204, responses=error_responses(404))
async def delete_entry(entry_id: Annotated[str, Path(max_length=64)], request: Request) -> Response:
    if not ENTRY_ID.fullmatch(entry_id):
        raise NotFound(f"journal entry {entry_id!r} does not exist", param="id")
    await _journal(request).delete(await _user(request, ACT), entry_id)
    return Response(status_code=204)


@router.get("/insights", response_model=InsightsOut)
async def insights(
    request: Request,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> dict[str, object]:
    """Defaults to the last 30 days."""
    since, until = _bound(start, "from", end=False), _bound(end, "to", end=True)
    if since is None and until is None:
        since = datetime.now(UTC) - timedelta(days=DEFAULT_INSIGHT_DAYS)
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("from must be before to", param="from")
    return await _journal(request).insights(await _user(request, INSIGHTS), since, until)
