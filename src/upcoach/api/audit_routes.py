"""GET /api/audit: the audit trail for auditors and admins, as a JSON page or a JSONL stream.

Every read is itself audited ("audit.read", with the filters used) before anything is returned, and the answer
stops just before that event: a snapshot of the trail as it was when the read began.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from upcoach.api.service_schemas import AuditPage
from upcoach.api.times import as_utc
from upcoach.errors import InvalidRequest
from upcoach.observability.audit import AuditLog
from upcoach.security.auth import Principal, require
from upcoach.security.keys import Role
from upcoach.storage.audit import AuditFilter

MAX_ID = 2**63 - 1

router = APIRouter(prefix="/api", tags=["audit"])

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _utc(value: datetime | None, param: str) -> datetime | None:
    # A time given without a zone is read as UTC, the zone the trail is written in.
    return None if value is None else as_utc(value, param)


def audit_log_of(request: Request) -> AuditLog:
    audit = getattr(request.app.state, "audit_log", None)
    if not isinstance(audit, AuditLog):
        raise RuntimeError("app.state.audit_log is not set: create_app must build the AuditLog")
    return audit


async def _jsonl(audit: AuditLog, filters: AuditFilter, limit: int | None) -> AsyncIterator[bytes]:
    sent = 0
    async for event in audit.stream(filters):
        if limit is not None and sent >= limit:
            return
        yield (json.dumps(event.to_json(), ensure_ascii=False) + "\n").encode()
        sent += 1


@router.get(
    "/audit",
    response_model=AuditPage,
    responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
async def read_audit(
    request: Request,
    principal: Annotated[Principal, Depends(require(Role.auditor, Role.admin))],
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    # Bounded to the database's BIGINT: a larger id is a 400, not an overflow in the driver.
    after_id: Annotated[int | None, Query(ge=0, le=MAX_ID, description="return events after this id (paging)")] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description=f"json: default {DEFAULT_PAGE}, at most {MAX_PAGE}")
    ] = None,
    output_format: Annotated[Literal["json", "jsonl"], Query(alias="format")] = "json",
) -> Response:
    """Audit events oldest first, filtered by actor, action, time (inclusive, UTC unless a zone is given), id."""
    if output_format == "json" and limit is not None and limit > MAX_PAGE:
        raise InvalidRequest(f"limit must be at most {MAX_PAGE} for format=json; use format=jsonl", param="limit")
    audit = audit_log_of(request)
    since, until = _utc(since, "since"), _utc(until, "until")
    used = {
        "actor": actor,
        "action": action,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "after_id": after_id,
        "limit": limit,
    }
    read = await audit.append(
        principal.user_id,
        principal.role.value,
        "audit.read",
        details={
            "format": output_format,
            "filters": {name: value for name, value in used.items() if value is not None},
        },
    )
    filters = AuditFilter(actor=actor, action=action, since=since, until=until, after_id=after_id, before_id=read.id)

    if output_format == "jsonl":
        return StreamingResponse(_jsonl(audit, filters, limit), media_type="application/x-ndjson")

    page_size = limit or DEFAULT_PAGE
    # One row more than asked tells whether another page follows without a count query.
    events = await audit.query(
        actor=actor, action=action, since=since, until=until, after_id=after_id, before_id=read.id, limit=page_size + 1
    )
    page = events[:page_size]
    return JSONResponse(
        {
            "object": "list",
            "data": [event.to_json() for event in page],
            "has_more": len(events) > page_size,
            "last_id": page[-1].id if page else None,
        }
    )
