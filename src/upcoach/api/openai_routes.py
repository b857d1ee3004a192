"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions (streaming and not)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from upcoach.api.openai_schemas import (
    ChatCompletionRequest,
    chunk_dict,
    completion_dict,
    new_completion_id,
)
from upcoach.llm.base import Chunk
from upcoach.services import Services

router = APIRouter(prefix="/v1")


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/models")
async def list_models(request: Request) -> dict[str, object]:
    created = int(time.time())
    data = [{"id": mid, "object": "model", "created": created, "owned_by": "upcoach"}
            for mid in _services(request).model_ids()]  # fmt: skip
    return {"object": "list", "data": data}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    model_id, backend = _services(request).backend_for(body.model)
    completion_id = new_completion_id()
    internal = body.to_internal(completion_id)
    if not body.stream:
        completion = await backend.chat(internal)
        return JSONResponse(completion_dict(completion_id, model_id, completion))

    stream = backend.stream(internal)
    # Wait until the backend admitted the request (queue, context checks) so errors still get a proper status.
    first = await anext(stream)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _sse(stream, first, completion_id, model_id, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _sse(
    stream: AsyncIterator[Chunk], first: Chunk, completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield _event(chunk_dict(completion_id, model, created, delta={"role": "assistant", "content": ""}))
    # Content events differ only in the text: encode the frame once and splice each JSON-escaped delta in.
    frame = _event(chunk_dict(completion_id, model, created, delta={"content": _SPLICE}))
    head, tail = frame.split(json.dumps(_SPLICE).encode(), 1)
    chunk: Chunk | None = first
    try:
        while chunk is not None:
            if chunk.final is not None:
                final = chunk.final
                yield _event(chunk_dict(completion_id, model, created, finish_reason=final.finish_reason))
                if include_usage:
                    yield _event(chunk_dict(completion_id, model, created, usage=final.usage, with_choice=False))
                break
            if chunk.text:
                yield head + json.dumps(chunk.text, ensure_ascii=False).encode() + tail
            chunk = await anext(stream, None)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


_SPLICE = "\x00splice\x00"
