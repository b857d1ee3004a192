"""Grammar-constrained, branched requests (suggestion chips) to the engine process, for ``serve --workers N``.

The workers reach the engine's model as an OpenAI peer (llm/pool.py), and the OpenAI wire has no GBNF grammar, no
branches and no priority: chips would always come from the library there. The engine process therefore also
answers ``POST /v1/upcoach/generate`` (engine_app.py) with our own ``ChatRequest`` fields, and ``EngineChips`` is the
worker's side of it: a backend with ``supports_grammar`` and ``supports_branches`` that coaching/chips.py uses like
the in-process engine. One request, one JSON answer: chips are a few dozen tokens, nobody streams them. Closing the
call (the chips budget ran out) closes the connection, and the engine cancels the sequence (api/disconnect.py).
Health and live figures are the engine pool's (its probe loop), so both paths see the same engine state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import httpx
from pydantic import BaseModel, Field

from upcoach.errors import InvalidRequest, Overloaded, Unavailable
from upcoach.llm.base import Backend, BackendInfo, ChatMessage, ChatRequest, Chunk, Completion, GenerationParams, Health
from upcoach.llm.base import Usage as _Usage

GENERATE_PATH = "/v1/upcoach/generate"


class WireMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class GenerateRequest(BaseModel):
    """The ChatRequest fields chips use, on the engine socket (only the workers of this server speak it)."""

    messages: list[WireMessage] = Field(min_length=1, max_length=64)
    max_tokens: int = Field(ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float = Field(default=0.95, gt=0, le=1)
    seed: int | None = None
    grammar: str = Field(max_length=20_000)
    branches: int = Field(default=1, ge=1, le=8)
    background: bool = False
    request_id: str = Field(default="", max_length=128)

    @classmethod
    def of(cls, request: ChatRequest) -> GenerateRequest:
        params = request.params
        return cls(
            messages=[WireMessage(role=m.role, content=m.content) for m in request.messages],  # type: ignore[arg-type]
            max_tokens=params.max_tokens or 64, temperature=params.temperature, top_p=params.top_p, seed=params.seed,
            grammar=request.grammar or "", branches=request.branches, background=request.background,
            request_id=request.request_id,
        )  # fmt: skip

    def internal(self) -> ChatRequest:
        params = GenerationParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  seed=self.seed)  # fmt: skip
        messages = tuple(ChatMessage(m.role, m.content) for m in self.messages)
        return ChatRequest(messages, params, self.request_id, grammar=self.grammar, branches=self.branches,
                           background=self.background)  # fmt: skip


def generated_body(completion: Completion) -> dict[str, object]:
    usage = completion.usage
    return {"text": completion.text, "finishReason": completion.finish_reason, "model": completion.model,
            "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens,
                      "cachedTokens": usage.cached_tokens}}  # fmt: skip


class EngineChips:
    """The engine process's model for chips, seen from an API worker. ``aclose()`` releases the connection pool."""

    kind = "local"
    supports_grammar = True
    supports_branches = True

    def __init__(self, pool: Backend, socket_path: str, timeout: float = 60.0) -> None:
        self._pool = pool
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path), base_url="http://engine", timeout=timeout
        )

    async def health(self) -> Health:
        return await self._pool.health()

    def info(self) -> BackendInfo:
        return self._pool.info()

    async def chat(self, request: ChatRequest) -> Completion:
        async for chunk in self.stream(request):
            if chunk.final is not None:
                return chunk.final
        raise Unavailable("the engine process ended without a result")

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        if request.grammar is None:
            raise InvalidRequest("the engine socket's generate call is for grammar-constrained requests")
        try:
            response = await self._client.post(GENERATE_PATH, json=GenerateRequest.of(request).model_dump())
        except httpx.HTTPError as exc:
            raise Unavailable(f"the engine process cannot be reached ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise _error(response)
        body = response.json()
        usage = body["usage"]
        yield Chunk()
        yield Chunk(body["text"])
        yield Chunk(final=Completion(
            body["text"], body["finishReason"],
            _Usage(usage["promptTokens"], usage["completionTokens"], usage["cachedTokens"]), body["model"],
        ))  # fmt: skip

    async def aclose(self) -> None:
        await self._client.aclose()


def _error(response: httpx.Response) -> Exception:
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    if response.status_code == 429:
        retry = response.headers.get("retry-after")
        return Overloaded(message, retry_after=float(retry) if retry and retry.isdigit() else None)
    if response.status_code == 400:
        return InvalidRequest(message)
    return Unavailable(f"the engine process answered {response.status_code}: {message}")
