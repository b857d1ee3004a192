"""POST /v1/completions: OpenAI's legacy text completions (streamed and not) for clients that still use them.

The prompt is continued as raw text by the LOCAL model (no chat template), through the hybrid engine pinned
local, so it is inspected by the guard, recorded and measured like a chat. Cloud peers only take chat messages.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, ValidationInfo, field_validator

from upcoach.api.errors import error_body
from upcoach.api.openai_schemas import OpenAIWire, StreamOptions, token_id_keys, unsupported, usage_dict
from upcoach.api.service_schemas import TextCompletionOut, json_or_stream
from upcoach.errors import UpcoachError
from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.routing.engine import Event, HybridRequest
from upcoach.routing.policy import Hints
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/v1")

# Refused unless unused, as on chat (api/openai_schemas.py REFUSED_UNLESS).
REFUSED_UNLESS: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "logprobs": (None, 0),
    "suffix": (None, ""),
}


class CompletionRequest(OpenAIWire):
    model: str = Field(min_length=1, max_length=256)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int = Field(default=16, ge=1, le=32768)  # OpenAI's default for this endpoint
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(default=None, max_length=1024)
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    n: int | None = None
    best_of: int | None = None
    logprobs: int | None = None
    suffix: str | None = None

    @field_validator(*REFUSED_UNLESS, mode="before")
    @classmethod
    def _refused(cls, value: object, info: ValidationInfo) -> object:
        if value not in REFUSED_UNLESS[info.field_name or ""]:
            raise unsupported(f"{info.field_name} (one completion, no log probabilities, no suffix)")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return token_id_keys(value)

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def params(self, max_tokens: int) -> GenerationParams:
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=(self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ()),
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items()),
        )


@router.post("/completions", response_model=None, responses=json_or_stream(TextCompletionOut))
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    services: Services = request.app.state.services
    services.pin_for(body.model)  # unknown models are a 404; every completion runs locally
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    hybrid = HybridRequest(
        messages=(ChatMessage("user", body.text()),),
        params=body.params(services.token_cap(request, body.max_tokens)),
        hints=Hints(privacy_level="private"),
        request_id=completion_id,
        endpoint="openai",
        user_id=await services.subject(request, ACT, body.user),
        force="local",
        raw_prompt=True,
    )
    model = services.local_model_id
    echo = body.text() if body.echo else ""
    if not body.stream:
        outcome = await services.hybrid.process(hybrid)
        choice = _choice(echo + outcome.text, outcome.finish_reason)
        return JSONResponse({**_head(completion_id, model), "choices": [choice], "usage": usage_dict(outcome.usage)})
    events = services.hybrid.stream(hybrid)
    await anext(events)  # admitted: errors up to here still get a proper status code
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(events, completion_id, model, echo, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _head(completion_id: str, model: str) -> dict[str, Any]:
    return {"id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model}


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    finish = None if finish_reason is None else "length" if finish_reason == "length" else "stop"
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _sse(
    events: AsyncIterator[Event], completion_id: str, model: str, echo: str, include_usage: bool
) -> AsyncIterator[bytes]:
    head = _head(completion_id, model)
    try:
        if echo:
            yield _event({**head, "choices": [_choice(echo, None)]})
        async for event in events:
            if event.outcome is not None:
                yield _event({**head, "choices": [_choice("", event.outcome.finish_reason)]})
                if include_usage:
                    yield _event({**head, "choices": [], "usage": usage_dict(event.outcome.usage)})
                break
            if event.text:
                yield _event({**head, "choices": [_choice(event.text, None)]})
    except UpcoachError as exc:
        yield _event(error_body(exc.message, type_=exc.type, code=exc.code, param=exc.param))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"
