"""Answer ratings: users rate their own answers; admins read quality per processing mode and model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from upcoach.api.deps import CHAT_ROLES, caller
from upcoach.api.errors import error_responses
from upcoach.api.idempotency import IDEMPOTENT
from upcoach.api.user_data_schemas import RatingOut, RatingSummaryOut
from upcoach.coaching.ratings import Ratings
from upcoach.errors import Unavailable
from upcoach.security.acting import ACT
from upcoach.security.auth import Principal
from upcoach.security.keys import Role
from upcoach.services import Services

router = APIRouter(prefix="/api/ai/feedback", tags=["feedback"])


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    request_id: str = Field(alias="requestId", min_length=1, max_length=64, pattern=r"^[^\x00]+$")
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=2000)


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _ratings(request: Request) -> Ratings:
    ratings = getattr(_services(request), "ratings", None)
    if ratings is None:
        raise Unavailable("ratings are not available on this server")
    return ratings  # type: ignore[no-any-return]


@router.post(
    "",
    status_code=201,
    response_model=RatingOut,
    responses={200: {"model": RatingOut, "description": "replaced an earlier rating"}, **error_responses(404)},
    dependencies=IDEMPOTENT,
)
async def rate(
    body: FeedbackIn, request: Request, _: Annotated[Principal, Depends(caller(*CHAT_ROLES))]
) -> JSONResponse:
    """201 for the first rating of a request, 200 when it replaces an earlier one."""
    user = await _services(request).subject(request, ACT)
    rating, created = await _ratings(request).rate(user, body.request_id, body.rating, body.comment)
    return JSONResponse(rating, status_code=201 if created else 200)


@router.get("/summary", response_model=RatingSummaryOut)
async def summary(request: Request, _: Annotated[Principal, Depends(caller(Role.admin))]) -> dict[str, object]:
    return await _ratings(request).summary()
