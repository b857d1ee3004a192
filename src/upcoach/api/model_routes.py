"""/api/ai/models: model management for admins, and model distribution (artifact, signed manifest) for phones.

Changes (download, update, rollback, delete, A/B) need the admin role; reading the status and the A/B comparison
needs admin or auditor; anything a phone needs (recommend, manifest, artifact, signing key) is open to every
authenticated caller; an A/B rating only to whoever was served the rated answer. ``update`` answers 202 with a
job, like ``download``: fetching a new version can take minutes, and its swap happens only after a smoke test, so
the job is the one place to follow both.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.errors import error_responses
from upcoach.api.model_schemas import (
    AbRatingOut,
    AbStoppedOut,
    AbTestEnvelope,
    DeletedOut,
    DownloadBody,
    ExperimentBody,
    JobEnvelope,
    ManifestOut,
    RatingBody,
    RecommendationOut,
    SigningKeyOut,
    StatusOut,
    SwappedOut,
    UpdateBody,
    catalog_json,
    manifest_json,
    recommendation_json,
    version_json,
)
from upcoach.errors import InvalidRequest, ModelNotReady, ModelStateConflict, NotFound, RangeNotSatisfiable, Unavailable
from upcoach.modelstore.catalog import CATALOG
from upcoach.modelstore.devices import MAX_RAM_MB, DeviceQuery, parse_capabilities, recommend
from upcoach.modelstore.manager import ModelManager, PullSpec
from upcoach.modelstore.signing import ALGORITHM, ManifestSigner
from upcoach.security.acting import ACT
from upcoach.security.auth import Principal
from upcoach.security.keys import Role

router = APIRouter(prefix="/api/ai/models", tags=["models"])

Admin = Annotated[Principal, Depends(caller(Role.admin))]
Reader = Annotated[Principal, Depends(caller(Role.admin, Role.auditor))]
Anyone = Annotated[Principal, Depends(caller(*Role))]
Rater = Annotated[Principal, Depends(caller(*CHAT_ROLES))]

NOT_FOUND = error_responses(404)
CHANGE_ERRORS = error_responses(404, 409)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _manager(request: Request) -> ModelManager:
    manager = getattr(request.app.state.services, "models", None)
    if manager is None:
        raise Unavailable("model management is not available on this server (no model store)")
    return manager  # type: ignore[no-any-return]


def _signer(request: Request) -> ManifestSigner:
    signer = getattr(request.app.state.services, "model_signer", None)
    if signer is None:
        raise Unavailable("model signing is not available on this server")
    return signer  # type: ignore[no-any-return]


def _serving(manager: ModelManager) -> set[str]:
    return {m.version_id for m in (manager.backend.current, manager.backend.candidate) if m and m.version_id}


# ---- admin ---------------------------------------------------------------------------------------------------------
@router.post("/download", status_code=202, response_model=JobEnvelope, responses=error_responses(404, 409))
async def download(body: DownloadBody, request: Request, principal: Admin) -> dict[str, Any]:
    """Start fetching a catalog model or a URL; follow the job in GET /api/ai/models/status."""
    spec = PullSpec.parse(
        source=body.source, model_id=body.model_id, name=body.name, version=body.version, sha256=body.sha256
    )
    job = await _manager(request).download(spec, principal.user_id)
    return {"job": job.to_json()}


@router.get("/status", response_model=StatusOut)
async def status(request: Request, _: Reader) -> dict[str, Any]:
    """Every installed version, every catalog model not installed yet, and every job with its progress."""
    manager = _manager(request)
    versions = await manager.registry.list()
    installed_names = {v.name for v in versions}
    serving = _serving(manager)
    models = [version_json(v, serving=serving) for v in versions]
    models += [catalog_json(entry) for name, entry in CATALOG.items() if name not in installed_names]
    current = manager.backend.current
    return {
        "activeId": current.version_id if current else None,
        "servingModel": current.name if current else None,
        "models": models,
        "jobs": await manager.job_views(),
        "abTest": manager.experiment.to_json() if manager.experiment else None,
    }


@router.get("/jobs/{job_id}", response_model=JobEnvelope, responses=NOT_FOUND)
async def job(job_id: str, request: Request, _: Reader) -> dict[str, Any]:
    return {"job": _manager(request).job(job_id).to_json()}


@router.post("/update", status_code=202, response_model=JobEnvelope, responses=CHANGE_ERRORS)
async def update(body: UpdateBody, request: Request, principal: Admin) -> dict[str, Any]:
    """Install (if needed), smoke-test and swap to a version with zero failed requests; 202 with the job."""
    manager = _manager(request)
    model_id, spec = await manager.plan_update(
        model_id=body.model_id, source=body.source, version=body.version, sha256=body.sha256
    )
    job = await manager.update(model_id=model_id, spec=spec, actor=principal.user_id)
    return {"job": job.to_json()}


@router.post("/rollback", response_model=SwappedOut, responses=error_responses(409))
async def rollback(request: Request, principal: Admin) -> dict[str, Any]:
    """Swap back to the version active before the current one (loaded and smoke-tested first)."""
    return await _manager(request).rollback(principal.user_id)


@router.delete("/{model_id}", response_model=DeletedOut, responses=CHANGE_ERRORS)
async def delete(model_id: str, request: Request, principal: Admin) -> dict[str, Any]:
    await _manager(request).delete(model_id, principal.user_id)
    return {"id": model_id, "deleted": True}


# ---- version A/B ---------------------------------------------------------------------------------------------------
@router.post("/ab", response_model=AbTestEnvelope, responses=CHANGE_ERRORS)
async def start_ab(body: ExperimentBody, request: Request, principal: Admin) -> dict[str, Any]:
    experiment = await _manager(request).start_experiment(body.candidate_id, body.share, principal.user_id)
    return {"abTest": experiment.to_json()}


@router.get("/ab", response_model=AbTestEnvelope)
async def show_ab(request: Request, _: Reader) -> dict[str, Any]:
    experiment = _manager(request).experiment
    return {"abTest": experiment.to_json() if experiment else None}


@router.post("/ab/rating", response_model=AbRatingOut, responses=CHANGE_ERRORS)
async def rate_ab(body: RatingBody, request: Request, _: Rater) -> dict[str, Any]:
    """Rate an answer the user was served by the running test (once per request: a new rating replaces)."""
    services = request.app.state.services
    user_id = await services.subject(request, ACT)
    experiment = _manager(request).experiment
    if experiment is None:
        raise ModelStateConflict("no A/B test is running")
    if await services.requests.served_to(body.request_id, user_id) is None:
        raise NotFound(f"request {body.request_id!r} was not answered for you", param="requestId")
    version = experiment.rate(body.rating, request_id=body.request_id, user_id=user_id)
    return {"version": version, "rating": body.rating}


@router.post("/ab/promote", response_model=AbStoppedOut, responses=error_responses(409))
async def promote_ab(request: Request, principal: Admin) -> dict[str, Any]:
    return await _manager(request).stop_experiment(principal.user_id, promote=True)


@router.post("/ab/stop", response_model=AbStoppedOut, responses=error_responses(409))
async def stop_ab(request: Request, principal: Admin) -> dict[str, Any]:
    return await _manager(request).stop_experiment(principal.user_id, promote=False)


# ---- devices -------------------------------------------------------------------------------------------------------
# The capabilities parameter is comma-separated (OpenAPI form style, explode false): an array of the enum.
_CAPABILITIES_PARAM = {
    "name": "capabilities",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": False,
    "description": "what the device reports, comma-separated (omit it when unknown; empty means none)",
    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Capability"}},
}


@router.get(
    "/recommend",
    response_model=RecommendationOut,
    openapi_extra={"parameters": [_CAPABILITIES_PARAM]},
)
async def recommend_model(
    request: Request,
    _: Anyone,
    ram_mb: Annotated[int | None, Query(alias="ramMb", ge=1, le=MAX_RAM_MB)] = None,
    device_model: Annotated[str, Query(alias="deviceModel", max_length=128)] = "",
    battery_level: Annotated[float | None, Query(alias="batteryLevel", ge=0, le=100)] = None,
    capabilities: Annotated[str | None, Query(max_length=1024, include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Which model this phone's hardware could run (a tier with reasons), whether the app reports the runtime to
    run it, and where to fetch it."""
    caps: frozenset[str] | None = None
    if capabilities is not None:
        try:
            caps = frozenset(parse_capabilities(capabilities.split(",")))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="capabilities") from exc
    result = recommend(DeviceQuery(ram_mb, device_model.strip(), battery_level, caps))
    installed_id = None
    manager = getattr(request.app.state.services, "models", None)
    if result.model_id is not None and manager is not None:
        found = [v for v in await manager.registry.list() if v.name == result.model_id and v.status == "ready"]
        found.sort(key=lambda v: (v.active, v.created_at), reverse=True)
        installed_id = found[0].id if found else None
    return recommendation_json(result, installed_id)


@router.get("/signing-key", response_model=SigningKeyOut)
async def signing_key(request: Request, _: Anyone) -> dict[str, Any]:
    """The Ed25519 public key manifests are signed with (apps pin it)."""
    signer = _signer(request)
    return {
        "keyId": signer.key_id,
        "algorithm": ALGORITHM,
        "publicKey": base64.b64encode(signer.public_raw).decode(),
        "publicKeyPem": signer.public_pem(),
    }


async def _ready_version(request: Request, model_id: str) -> Any:
    version = await _manager(request).registry.get(model_id)
    if version.status != "ready" or version.size is None:
        raise ModelNotReady(f"model {version.id} is {version.status}; only ready versions are distributed")
    return version


@router.get("/{model_id}/manifest", response_model=ManifestOut, responses=CHANGE_ERRORS)
async def manifest(model_id: str, request: Request, _: Anyone) -> dict[str, Any]:
    version = await _ready_version(request, model_id)
    return manifest_json(_signer(request).sign(version.name, version.version, version.sha256, version.size))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``[start, end)`` asked for, or None to send the whole file.

    A malformed or multi-range header is ignored, as RFC 9110 14.2 allows; a well-formed range that starts past
    the end (or an empty suffix) is unsatisfiable: 416.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header!r} selects nothing of {size} bytes", size=size)
        return max(0, size - length), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts at or after the end ({size} bytes)", size=size)
    return start, end


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses weak comparison (RFC 9110 13.1.2): W/ prefixes are ignored."""
    candidates = [part.strip() for part in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)


@router.get(
    "/{model_id}/artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        206: {"description": "the byte range asked for"},
        304: {"description": "not modified: the If-None-Match ETag is current"},
        **error_responses(404, 409, 416),
    },
)
async def artifact(model_id: str, request: Request, _: Anyone) -> Response:
    """The plaintext GGUF, resumable: Range (one range), If-Range and If-None-Match against the sha256 ETag."""
    manager = _manager(request)
    version = await _ready_version(request, model_id)
    size: int = version.size
    etag = f'"{version.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        # The bytes never change under this ETag; no-transform keeps proxies from compressing ranges apart.
        "Cache-Control": "private, max-age=31536000, immutable, no-transform",
        "Content-Disposition": f'attachment; filename="{version.name}-{version.version}.gguf"',
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    requested = parse_range(request.headers.get("range"), size)
    if_range = request.headers.get("if-range")
    # If-Range needs a strong match (RFC 9110 13.1.5): a changed or weak validator means "send it all".
    if requested is not None and if_range is not None and if_range.strip() != etag:
        requested = None
    start, end = requested if requested is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    status_code = 200
    if requested is not None:
        status_code = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    body = manager.store.read_plaintext_range(version.id, start, end)
    # Decrypt the first chunk before the status line: a tampered or truncated file (its header, its size, the chunk
    # the range starts in) is then a clear model_tampered error, not a 200 or 206 that breaks off at once.
    first = await anext(body, b"")
    return StreamingResponse(
        _prepend(first, body), status_code=status_code, headers=headers, media_type="application/octet-stream"
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for block in rest:
        yield block
