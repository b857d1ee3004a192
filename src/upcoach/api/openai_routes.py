"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions (streaming and not).

Every chat goes through the hybrid engine, so it is routed, recorded and measured like /api/ai/hybrid/process:
model ``auto`` lets the policy choose (privacy level from the ``X-Privacy-Level`` header or
``metadata.privacy_level``, private by default); the local model's id or ``default`` pins the local side.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from upcoach.api.disconnect import unless_disconnected
from upcoach.api.errors import error_body
from upcoach.api.offline import OFFLINE_ERRORS, answer_offline, openai_extension
from upcoach.api.openai_schemas import (
    ChatCompletionRequest,
    choice_dict,
    chunk_dict,
    completion_dict,
    new_completion_id,
    tool_calls_wire,
)
from upcoach.api.service_schemas import ChatCompletionOut, ModelList, json_or_stream
from upcoach.coaching.offline import OFFLINE_BACKEND
from upcoach.errors import InvalidRequest, Unavailable, UpcoachError
from upcoach.llm.base import ResponseFormat, TokenLogprob, Tools, Usage
from upcoach.llm.structured import CallSplitter, ToolCall, check_answer, parse_calls
from upcoach.routing.engine import Event, HybridRequest, Outcome
from upcoach.routing.policy import Hints, PrivacyLevel
from upcoach.security.acting import ACT
from upcoach.services import Services

router = APIRouter(prefix="/v1")


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/models", response_model=ModelList)
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


@router.post("/chat/completions", response_model=None, responses=json_or_stream(ChatCompletionOut))
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
    want_logprobs = hybrid.params.logprobs is not None
    try:
        if not body.stream:
            answer = await unless_disconnected(request, collect_choices(engine.stream(hybrid)))
            outcome = answer.outcome
            model = outcome.model or services.local_model_id
            choices = [
                _choice(index, text, finish, answer.logprobs.get(index, []) if want_logprobs else None,
                        response_format, tools)
                for index, (text, finish) in enumerate(answer.texts_and_finishes(hybrid.params.n))
            ]  # fmt: skip
            body_out = completion_dict(completion_id, model, None, "stop", outcome.usage, choices=choices)
            return JSONResponse({**body_out, "upcoach": quality_extension(outcome)}, headers=quality_headers(outcome))
        events = engine.stream(hybrid)
        admitted = await anext(events)  # admitted: errors up to here still get a proper status code
    except OFFLINE_ERRORS as exc:
        if force is not None or response_format or tools or want_logprobs or hybrid.params.n > 1:
            # A caller that named a model gets that model's error, and one that asked for JSON, tool calls, token
            # log probabilities or several choices cannot use one library answer in prose.
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
    stream = _Stream(completion_id, model, include_usage, response_format, tools, hybrid.params.n, want_logprobs)
    return StreamingResponse(
        stream.frames(events, admitted.notice),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **notice_headers(admitted.notice)},
    )


def _choice(
    index: int,
    text: str,
    finish: str,
    logprobs: list[TokenLogprob] | None,
    response_format: ResponseFormat | None,
    tools: Tools | None,
) -> dict[str, object]:
    content: str | None = text
    calls: list[ToolCall] = []
    if finish != "length":  # a cut-off answer is returned as it is, like OpenAI's
        calls = check_answer(text, response_format, tools)
        content = parse_calls(text)[0] if calls else text
    return choice_dict(index, content, finish, calls, logprobs)


def _event(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class _Stream:
    """One streamed chat completion's frames: the role chunk of every choice, content (and tool-call) deltas with
    their choice index and log probabilities, each choice's finish, then usage and ``[DONE]``."""

    def __init__(self, completion_id: str, model: str, include_usage: bool, response_format: ResponseFormat | None,
                 tools: Tools | None, n: int, logprobs: bool) -> None:  # fmt: skip
        self.completion_id, self.model, self.include_usage = completion_id, model, include_usage
        self.response_format, self.tools, self.n, self.logprobs = response_format, tools, n, logprobs
        self.created = int(time.time())
        # Content events of choice 0 without log probabilities differ only in the text: encode the frame once and
        # splice each JSON-escaped delta in.
        frame = self._frame(delta={"content": _SPLICE})
        self._head, self._tail = frame.split(json.dumps(_SPLICE).encode(), 1)
        self._splitter = CallSplitter(tools is not None and tools.active)
        self._n_calls = 0
        self._others: dict[int, list[str]] = {}  # the text of choices 1.., for their format check
        self._ended: set[int] = set()

    def _frame(self, **fields: Any) -> bytes:
        return _event(chunk_dict(self.completion_id, self.model, self.created, **fields))

    def _deltas(self, pieces: Iterable[str | ToolCall], logprobs: tuple[TokenLogprob, ...]) -> Iterator[bytes]:
        for piece in pieces:
            if isinstance(piece, str):
                if self.logprobs:
                    yield self._frame(delta={"content": piece}, logprobs=logprobs)
                    logprobs = ()
                else:
                    yield self._head + json.dumps(piece, ensure_ascii=False).encode() + self._tail
                continue
            wire = {"index": self._n_calls, **tool_calls_wire([piece])[0]}
            self._n_calls += 1
            yield self._frame(delta={"tool_calls": [wire]})
        if logprobs:  # tokens whose text the stop matcher still holds
            yield self._frame(delta={}, logprobs=logprobs)

    def _other(self, event: Event) -> Iterator[bytes]:
        index = event.index
        if event.text or event.logprobs:
            self._others.setdefault(index, []).append(event.text)
            yield self._frame(delta={"content": event.text}, index=index,
                              logprobs=event.logprobs if self.logprobs else None)  # fmt: skip
        if event.finish is not None:
            self._ended.add(index)
            if event.finish != "length":
                check_answer("".join(self._others.get(index, [])), self.response_format, None)
            yield self._frame(finish_reason=event.finish, index=index)

    async def frames(self, events: AsyncIterator[Event], notice: str) -> AsyncIterator[bytes]:
        first = chunk_dict(self.completion_id, self.model, self.created, delta={"role": "assistant", "content": ""})
        yield _event({**first, "upcoach": notice_extension(notice)} if notice else first)
        for index in range(1, self.n):
            yield self._frame(delta={"role": "assistant", "content": ""}, index=index)
        try:
            async for event in events:
                if event.outcome is not None:
                    final = event.outcome
                    for frame in self._deltas(self._splitter.flush(), ()):
                        yield frame
                    if final.finish_reason != "length":
                        check_answer(final.text, self.response_format, self.tools)  # as asked, or an error event
                    for index in range(1, self.n):  # choices a cancelled or failed-over stream never ended
                        if index not in self._ended:
                            yield self._frame(finish_reason=final.finish_reason, index=index)
                    finish = chunk_dict(self.completion_id, self.model, self.created,
                                        finish_reason=final.finish_reason, tool_calls=self._n_calls > 0)  # fmt: skip
                    yield _event({**finish, "upcoach": quality_extension(final)})
                    if self.include_usage:
                        yield self._frame(usage=final.usage, with_choice=False)
                    break
                if event.index:
                    for frame in self._other(event):
                        yield frame
                elif event.text or event.logprobs:
                    pieces = self._splitter.feed(event.text) if event.text else []
                    for frame in self._deltas(pieces, event.logprobs if self.logprobs else ()):
                        yield frame
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
        **notice_extension(outcome.notice),
    }


def notice_extension(notice: str) -> dict[str, object]:
    """Crisis resources for a JSON or tool-call answer: beside it, so the answer stays valid (README)."""
    return {"crisisResources": notice, "flags": ["self_harm"]} if notice else {}


def notice_headers(notice: str) -> dict[str, str]:
    return {"X-Upcoach-Notice": "crisis-resources"} if notice else {}


def quality_headers(outcome: Outcome) -> dict[str, str]:
    headers = {"X-Upcoach-Strategy-Ids": ",".join(outcome.strategy_ids)} if outcome.strategy_ids else {}
    return {**headers, **notice_headers(outcome.notice)}


@dataclass
class Choices:
    """A whole answer gathered from the engine's events: choice 0 is the outcome's text, the others are joined
    from their events (each with its finish reason), and every choice's log probabilities."""

    outcome: Outcome
    others: dict[int, list[str]] = field(default_factory=dict)
    finishes: dict[int, str] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)

    def texts_and_finishes(self, n: int) -> list[tuple[str, str]]:
        first = [(self.outcome.text, self.outcome.finish_reason)]
        finish = self.outcome.finish_reason
        return first + [("".join(self.others.get(i, [])), self.finishes.get(i, finish)) for i in range(1, n)]


async def collect_choices(events: AsyncIterator[Event]) -> Choices:
    """Consume ``HybridEngine.stream`` into its choices (``process`` keeps choice 0 only)."""
    others: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    logprobs: dict[int, list[TokenLogprob]] = {}
    try:
        async for event in events:
            if event.outcome is not None:
                return Choices(event.outcome, others, finishes, logprobs)
            if event.logprobs:
                logprobs.setdefault(event.index, []).extend(event.logprobs)
            if event.index:
                others.setdefault(event.index, []).append(event.text)
            if event.finish is not None:
                finishes[event.index] = event.finish
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    raise Unavailable("no answer was produced")


async def _offline_sse(completion_id: str, text: str, extension: dict[str, object]) -> AsyncIterator[bytes]:
    created = int(time.time())
    yield _event(chunk_dict(completion_id, OFFLINE_BACKEND, created, delta={"role": "assistant", "content": ""}))
    yield _event(chunk_dict(completion_id, OFFLINE_BACKEND, created, delta={"content": text}))
    yield _event({**chunk_dict(completion_id, OFFLINE_BACKEND, created, finish_reason="stop"), "upcoach": extension})
    yield b"data: [DONE]\n\n"
