"""POST /v1/completions: OpenAI's legacy text completions (streamed and not) for clients that still use them.

The prompt is continued as raw text by the LOCAL model (no chat template), through the hybrid engine pinned
local, so it is inspected by the guard, recorded and measured like a chat. Cloud peers only take chat messages.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, ValidationInfo, field_validator, model_validator

from upcoach.api.errors import error_body
from upcoach.api.openai_routes import collect_choices
from upcoach.api.openai_schemas import OpenAIWire, StreamOptions, token_id_keys, unsupported, usage_dict
from upcoach.api.service_schemas import TextCompletionOut, json_or_stream
from upcoach.errors import UpcoachError
from upcoach.llm.base import ChatMessage, GenerationParams, TokenLogprob
from upcoach.llm.sampling import MAX_CHOICES
from upcoach.routing.engine import Event, HybridRequest
from upcoach.routing.policy import Hints
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/v1")

# Refused unless unused, as on chat (api/openai_schemas.py REFUSED_UNLESS).
REFUSED_UNLESS: dict[str, tuple[object, ...]] = {
    "best_of": (None, 1),
    "suffix": (None, ""),
}
MAX_LEGACY_LOGPROBS = 5  # the legacy endpoint's bound on ``logprobs`` (alternatives per token)


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
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LEGACY_LOGPROBS)
    best_of: int | None = None
    suffix: str | None = None

    @field_validator(*REFUSED_UNLESS, mode="before")
    @classmethod
    def _refused(cls, value: object, info: ValidationInfo) -> object:
        if value not in REFUSED_UNLESS[info.field_name or ""]:
            raise unsupported(f"{info.field_name} (no server-side best-of, no suffix)")
        return value

    @model_validator(mode="after")
    def _echo_logprobs(self) -> CompletionRequest:
        if self.echo and self.logprobs is not None:
            # The prompt's own log probabilities would need the logits of every prompt position.
            raise unsupported("echo with logprobs (log probabilities of the prompt)")
        return self

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
            logprobs=self.logprobs,
            n=self.n or 1,
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
    n, want = hybrid.params.n, body.logprobs is not None
    if not body.stream:
        answer = await collect_choices(services.hybrid.stream(hybrid))
        choices = [
            _choice(echo + text, finish, index, legacy_logprobs(answer.logprobs.get(index, [])) if want else None)
            for index, (text, finish) in enumerate(answer.texts_and_finishes(n))
        ]
        usage = usage_dict(answer.outcome.usage)
        return JSONResponse({**_head(completion_id, model), "choices": choices, "usage": usage})
    events = services.hybrid.stream(hybrid)
    await anext(events)  # admitted: errors up to here still get a proper status code
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(events, completion_id, model, echo, include_usage, n, want),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _head(completion_id: str, model: str) -> dict[str, Any]:
    return {"id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model}


def _choice(
    text: str, finish_reason: str | None, index: int = 0, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    finish = None if finish_reason is None else "length" if finish_reason == "length" else "stop"
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy ``logprobs`` object: parallel lists of tokens, their log probabilities, the alternatives (a
    token -> logprob map per position) and each token's character offset in the text (from ``offset``)."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _sse(
    events: AsyncIterator[Event], completion_id: str, model: str, echo: str, include_usage: bool, n: int = 1,
    want_logprobs: bool = False,
) -> AsyncIterator[bytes]:  # fmt: skip
    head = _head(completion_id, model)
    offsets = dict.fromkeys(range(n), len(echo))  # where each choice's next token starts in its text
    ended: set[int] = set()
    try:
        for index in range(n) if echo else ():
            yield _event({**head, "choices": [_choice(echo, None, index)]})
        async for event in events:
            if event.outcome is not None:
                for index in [i for i in range(1, n) if i not in ended]:
                    yield _event({**head, "choices": [_choice("", event.outcome.finish_reason, index)]})
                yield _event({**head, "choices": [_choice("", event.outcome.finish_reason)]})
                if include_usage:
                    yield _event({**head, "choices": [], "usage": usage_dict(event.outcome.usage)})
                break
            if event.text or (want_logprobs and event.logprobs):
                logprobs = legacy_logprobs(event.logprobs, offsets[event.index]) if want_logprobs else None
                offsets[event.index] += sum(len(e.token) for e in event.logprobs)
                yield _event({**head, "choices": [_choice(event.text, None, event.index, logprobs)]})
            if event.finish is not None:
                ended.add(event.index)
                yield _event({**head, "choices": [_choice("", event.finish, event.index)]})
    except UpcoachError as exc:
        yield _event(error_body(exc.message, type_=exc.type, code=exc.code, param=exc.param))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"
