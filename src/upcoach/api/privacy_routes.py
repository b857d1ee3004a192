"""The user's privacy settings, data rights and coach grants over HTTP (camelCase JSON).

Users act on themselves. Admins (and local development with auth off) may act on another user by naming them
in ``X-User-Id``; anyone else naming a different user is refused rather than silently served their own data
(security/acting.py). A grant is the user's own consent: a service cannot give one for them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from upcoach.api.deps import caller
from upcoach.api.device_schemas import GrantOut
from upcoach.api.errors import error_responses
from upcoach.api.user_data_schemas import ErasedOut, ExportOut, GrantList, PrivacySettingsOut
from upcoach.errors import InvalidRequest, NotFound
from upcoach.privacy.grants import Grants
from upcoach.privacy.rights import DataRights
from upcoach.privacy.settings import PrivacyService, PrivacySettings
from upcoach.security.acting import PRIVACY_CHANGE, PRIVACY_READ, SCOPES, Use
from upcoach.security.auth import Principal
from upcoach.storage.tables import utc_now

router = APIRouter(prefix="/api/privacy", tags=["privacy"])

CAMEL = {
    "processingMode": "processing_mode",
    "specialCategoryCloudOptIn": "special_category_cloud_opt_in",
    "region": "region",
    "retentionDays": "retention_days",
    "analyticsOptIn": "analytics_opt_in",
    "doNotShare": "do_not_share",
}
SNAKE = {snake: camel for camel, snake in CAMEL.items()}
READ_ONLY = frozenset({"updatedAt", "availableRegions", "notices", "userId"})
_ETAG = re.compile(r'\s*(?:W/)?"?(\d{1,9})"?\s*')
_GRANT_ID = re.compile(r"[0-9a-f]{32}")

Caller = Annotated[Principal, Depends(caller())]


def _privacy(request: Request) -> PrivacyService:
    service = request.app.state.services.privacy
    if not isinstance(service, PrivacyService):
        raise RuntimeError("Services.privacy is not set: create_app must build the PrivacyService")
    return service


def _rights(request: Request) -> DataRights:
    rights = request.app.state.services.rights
    if not isinstance(rights, DataRights):
        raise RuntimeError("Services.rights is not set: create_app must build DataRights")
    return rights


def _grants(request: Request) -> Grants:
    grants = request.app.state.services.grants
    if not isinstance(grants, Grants):
        raise RuntimeError("Services.grants is not set: create_app must build Grants")
    return grants


async def subject_of(request: Request, use: Use) -> str:
    """Whose privacy data this request is about (only admins may name someone else)."""
    return await request.app.state.services.subject(request, use)  # type: ignore[no-any-return]


def settings_body(settings: PrivacySettings, service: PrivacyService) -> dict[str, object]:
    notice = service.region_notice(settings.region)
    return {
        **{SNAKE[name]: value for name, value in settings.editable().items()},
        "version": settings.version,
        "updatedAt": settings.updated_at.isoformat() if settings.updated_at else None,
        "availableRegions": service.available_regions,
        "notices": [notice] if notice else [],
    }


def _respond(settings: PrivacySettings, service: PrivacyService) -> JSONResponse:
    return JSONResponse(settings_body(settings, service), headers={"ETag": f'"{settings.version}"'})


def _expected_version(body_version: object, if_match: str | None) -> int | None:
    version: int | None = None
    if body_version is not None:
        if isinstance(body_version, bool) or not isinstance(body_version, int) or body_version < 0:
            raise InvalidRequest("version: must be the non-negative integer you read", param="version")
        version = body_version
    if if_match is not None and if_match.strip() != "*":
        match = _ETAG.fullmatch(if_match)
        if match is None:
            raise InvalidRequest('If-Match: expected the ETag you read, e.g. "3"', param="If-Match")
        header_version = int(match.group(1))
        if version is not None and version != header_version:
            raise InvalidRequest("version in the body and If-Match disagree", param="version")
        version = header_version
    return version


@router.get("/settings", response_model=PrivacySettingsOut)
async def get_settings(request: Request, principal: Caller) -> JSONResponse:
    service = _privacy(request)
    return _respond(await service.get(await subject_of(request, PRIVACY_READ)), service)


@router.put("/settings", response_model=PrivacySettingsOut, responses=error_responses(409))
async def put_settings(
    request: Request,
    principal: Caller,
    body: Annotated[dict[str, Any], Body()],
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> JSONResponse:
    """Any subset of the editable settings, plus ``version`` (or If-Match) for optimistic concurrency."""
    service = _privacy(request)
    changes: dict[str, object] = {}
    for key, value in body.items():
        if key == "version":
            continue
        if key in READ_ONLY:
            raise InvalidRequest(f"{key}: read-only", param=key)
        if key not in CAMEL:
            raise InvalidRequest(f"{key}: unknown setting; editable: {', '.join(CAMEL)}", param=key)
        changes[CAMEL[key]] = value
    expected = _expected_version(body.get("version"), if_match)
    user_id = await subject_of(request, PRIVACY_CHANGE)
    try:
        updated = await service.update(
            user_id, changes, actor=principal.user_id, actor_role=principal.role.value, expected_version=expected
        )
    except InvalidRequest as exc:
        param = SNAKE.get(exc.param or "", exc.param)
        raise InvalidRequest(exc.message.replace(f"{exc.param}:", f"{param}:", 1), param=param) from exc
    return _respond(updated, service)


@router.get("/export", response_model=ExportOut)
async def export(request: Request, principal: Caller) -> JSONResponse:
    user_id = await subject_of(request, PRIVACY_READ)
    document = await _rights(request).export(user_id, actor=principal.user_id, actor_role=principal.role.value)
    return JSONResponse(document, headers={"Content-Disposition": 'attachment; filename="upcoach-export.json"'})


@router.delete("/data", response_model=ErasedOut)
async def erase(request: Request, principal: Caller) -> JSONResponse:
    user_id = await subject_of(request, PRIVACY_CHANGE)
    counts = await _rights(request).erase(user_id, principal.user_id, principal.role.value)
    return JSONResponse({"deleted": counts})


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    coach_id: str = Field(alias="coachId", min_length=1, max_length=128)
    scopes: list[str] = Field(min_length=1, max_length=len(SCOPES), description=", ".join(SCOPES))
    expires_at: AwareDatetime | None = Field(default=None, alias="expiresAt")


@router.post("/grants", status_code=201, response_model=GrantOut)
async def give_grant(body: GrantIn, request: Request, principal: Caller) -> dict[str, object]:
    """Let a coach read some of the caller's data until ``expiresAt`` (or until revoked)."""
    user_id = await subject_of(request, PRIVACY_CHANGE)
    grant = await _grants(request).give(
        user_id, body.coach_id, body.scopes, body.expires_at, actor=principal.user_id, actor_role=principal.role.value
    )
    return grant.to_json(utc_now())


@router.get("/grants", response_model=GrantList)
async def list_grants(request: Request, principal: Caller) -> dict[str, object]:
    """The grants the user gave (revoked and expired ones too, ``active`` says), and the live grants naming the
    caller as a coach (``received``: which clients' data they may read now)."""
    user_id = await subject_of(request, PRIVACY_READ)
    grants, now = _grants(request), utc_now()
    received = await grants.received_by(user_id) if user_id == principal.user_id else []
    return {
        "object": "list",
        "data": [grant.to_json(now) for grant in await grants.given_by(user_id)],
        "received": [grant.to_json(now) for grant in received],
    }


@router.delete("/grants/{grant_id}", status_code=204, responses=error_responses(404))
async def revoke_grant(grant_id: Annotated[str, Path(max_length=64)], request: Request, principal: Caller) -> Response:
    """Revoke a grant: the coach's next request is refused (grants are never cached)."""
    user_id = await subject_of(request, PRIVACY_CHANGE)
    if not _GRANT_ID.fullmatch(grant_id):
        raise NotFound(f"grant {grant_id!r} does not exist", param="id")
    await _grants(request).revoke(grant_id, user_id, actor=principal.user_id, actor_role=principal.role.value)
    return Response(status_code=204)
