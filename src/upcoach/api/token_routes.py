"""POST /tokenize and POST /detokenize with the local model's vocabulary, shaped like llama-server's helpers:
``{"content", "add_special"}`` -> ``{"tokens"}`` and ``{"tokens"}`` -> ``{"content"}``. Clients use them to count
tokens and to build ``logit_bias`` maps."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from upcoach.api.service_schemas import ContentOut, TokensOut
from upcoach.errors import Unavailable
from upcoach.llm.base import serving_engine
from upcoach.services import Services

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(max_length=1_000_000)
    add_special: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[int] = Field(max_length=262_144)


def _engine(request: Request) -> object:
    services: Services = request.app.state.services
    engine = serving_engine(services.local) if services.local is not None else None
    if engine is None or not hasattr(engine, "tokenize"):
        raise Unavailable(services.local_problem or "no local model to tokenize with")
    return engine


@router.post("/tokenize", response_model=TokensOut)
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, list[int]]:
    return {"tokens": _engine(request).tokenize(body.content, special=body.add_special)}  # type: ignore[attr-defined]


@router.post("/detokenize", response_model=ContentOut)
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, str]:
    return {"content": _engine(request).detokenize(body.tokens)}  # type: ignore[attr-defined]
