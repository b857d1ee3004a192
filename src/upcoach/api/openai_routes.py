"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions (streaming and not).

Every chat goes through the hybrid engine, so it is routed, recorded and measured like /api/ai/hybrid/process:
model ``auto`` lets the policy choose (privacy level from the ``X-Privacy-Level`` header or
``metadata.privacy_level``, private by default); the local model's id or ``default`` pins the local side.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import replace
from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from upcoach.api.disconnect import unless_disconnected
from upcoach.api.errors import error_body
from upcoach.api.offline import OFFLINE_ERRORS, answer_offline, openai_extension
from upcoach.api.openai_schemas import (
    ChatCompletionRequest,
    chunk_dict,
    completion_dict,
    new_completion_id,
    tool_calls_wire,
)
from upcoach.coaching.offline import OFFLINE_BACKEND
from upcoach.errors import InvalidRequest, UpcoachError
from upcoach.llm.base import ResponseFormat, Tools, Usage
from upcoach.llm.structured import CallSplitter, ToolCall, check_answer, parse_calls
from upcoach.routing.engine import Event, HybridRequest, Outcome
from upcoach.routing.policy import Hints, PrivacyLevel
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/v1")


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/models")
async def list_models(request: Request) -> dict[str, object]:
    created = int(time.time())
    data = [
        {"id": mid, "object": "model", "created": created, "owned_by": "upcoach"}
        for mid in _services(request).model_ids()
    ]
    return {"object": "list", "data": data}


def _privacy(body: ChatCompletionRequest, request: Request) -> PrivacyLevel:
    level = request.headers.get("x-privacy-level") or (body.metadata or {}).get("privacy_level") or "private"
    if level not in get_args(PrivacyLevel):
        raise InvalidRequest(f"privacy level {level!r} is not one of public, private, sensitive", param="privacy_level")
    return level  # type: ignore[return-value]


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    services = _services(request)
    force = services.pin_for(body.model)
    completion_id = new_completion_id()
    response_format, tools = body.output_format(), body.tool_set()
    hybrid = HybridRequest(
        messages=body.messages_internal(),
        params=replace(
            body.params(), max_tokens=services.token_cap(request, body.max_completion_tokens or body.max_tokens)
        ),
        hints=Hints(privacy_level=_privacy(body, request)),
        request_id=completion_id,
        endpoint="openai",
        user_id=await services.subject(request, ACT, body.user),
        force=force,
        response_format=response_format,
        tools=tools,
    )
    engine = services.hybrid
    try:
        if not body.stream:
            outcome = await unless_disconnected(request, engine.process(hybrid))
            model = outcome.model or services.local_model_id
            text: str | None = outcome.text
            calls = []
            if outcome.finish_reason != "length":  # a cut-off answer is returned as it is, like OpenAI's
                calls = check_answer(outcome.text, response_format, tools)
                text = parse_calls(outcome.text)[0] if calls else text
            body_out = completion_dict(completion_id, model, text, outcome.finish_reason, outcome.usage, calls)
            return JSONResponse({**body_out, "upcoach": quality_extension(outcome)}, headers=quality_headers(outcome))
        events = engine.stream(hybrid)
        await anext(events)  # admitted: errors up to here still get a proper status code
    except OFFLINE_ERRORS as exc:
        if force is not None or response_format or tools:
            # A caller that named a model gets that model's error, and one that asked for JSON or tool calls
            # cannot use a library answer in prose.
            raise
        answer = await answer_offline(services, hybrid.messages, exc, request_id=completion_id, user_id=hybrid.user_id)
        completion = completion_dict(completion_id, OFFLINE_BACKEND, answer.text, "stop", Usage())
        headers = {"X-Processing-Mode": "offline"}
        if not body.stream:
            return JSONResponse({**completion, "upcoach": openai_extension(answer, exc)}, headers=headers)
        return StreamingResponse(
            _offline_sse(completion_id, answer.text, openai_extension(answer, exc)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    model = body.model if body.model != "default" else services.local_model_id
    return StreamingResponse(
        _sse(events, completion_id, model, include_usage, response_format, tools),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _sse(
    events: AsyncIterator[Event],
    completion_id: str,
    model: str,
    include_usage: bool,
    response_format: ResponseFormat | None = None,
    tools: Tools | None = None,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield _event(chunk_dict(completion_id, model, created, delta={"role": "assistant", "content": ""}))
    # Content events differ only in the text: encode the frame once and splice each JSON-escaped delta in.
    frame = _event(chunk_dict(completion_id, model, created, delta={"content": _SPLICE}))
    head, tail = frame.split(json.dumps(_SPLICE).encode(), 1)
    splitter = CallSplitter(tools is not None and tools.active)
    n_calls = 0

    def deltas(pieces: Iterable[str | ToolCall]) -> Iterator[bytes]:
        nonlocal n_calls
        for piece in pieces:
            if isinstance(piece, str):
                yield head + json.dumps(piece, ensure_ascii=False).encode() + tail
                continue
            wire = {"index": n_calls, **tool_calls_wire([piece])[0]}
            n_calls += 1
            yield _event(chunk_dict(completion_id, model, created, delta={"tool_calls": [wire]}))

    try:
        async for event in events:
            if event.outcome is not None:
                final = event.outcome
                for frame_ in deltas(splitter.flush()):
                    yield frame_
                if final.finish_reason != "length":
                    check_answer(final.text, response_format, tools)  # JSON and calls as asked, or an error event
                finish = chunk_dict(
                    completion_id, model, created, finish_reason=final.finish_reason, tool_calls=n_calls > 0
                )
                yield _event({**finish, "upcoach": quality_extension(final)})
                if include_usage:
                    yield _event(chunk_dict(completion_id, model, created, usage=final.usage, with_choice=False))
                break
            if event.text:
                for frame_ in deltas(splitter.feed(event.text)):
                    yield frame_
    except UpcoachError as exc:
        # The 200 is already on the wire: report the failure the way OpenAI streams do, as an error event.
        yield _event(error_body(exc.message, type_=exc.type, code=exc.code, param=exc.param))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


_SPLICE = "\x00splice\x00"


def quality_extension(outcome: Outcome) -> dict[str, object]:
    """Added as ``upcoach`` to a completion (and to the last chunk of a stream): OpenAI clients ignore it."""
    return {
        "processingMode": outcome.processing_mode,
        "strategyIds": outcome.strategy_ids,
        "promptVersion": outcome.prompt_version,
        "reasons": outcome.reasons,
    }


def quality_headers(outcome: Outcome) -> dict[str, str]:
    return {"X-Upcoach-Strategy-Ids": ",".join(outcome.strategy_ids)} if outcome.strategy_ids else {}


async def _offline_sse(completion_id: str, text: str, extension: dict[str, object]) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield _event(chunk_dict(completion_id, OFFLINE_BACKEND, created, delta={"role": "assistant", "content": ""}))
    yield _event(chunk_dict(completion_id, OFFLINE_BACKEND, created, delta={"content": text}))
    yield _event({**chunk_dict(completion_id, OFFLINE_BACKEND, created, finish_reason="stop"), "upcoach": extension})
    yield b"data: [DONE]\n\n"
