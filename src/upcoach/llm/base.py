"""The one small interface every inference backend implements: local llama.cpp, cloud, self-hosted pools.

Contract:
- ``chat(request)`` returns the whole ``Completion``.
- ``stream(request)`` is an async iterator of ``Chunk``; exactly the last chunk carries ``final``. Closing the
  iterator early (client gone) cancels the generation and frees the backend's slot.
- ``health()`` is cheap and never raises: it reports whether the backend can take a request now.
- ``info()`` describes the backend for /v1/models, readiness and the routing engine's live state.
Backends raise only ``upcoach.errors`` exceptions; vendor errors are translated in the adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant", "tool", "developer"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Penalty on tokens already in the context (1.0: none). Honoured by the llama.cpp engine.
    repeat_penalty: float = 1.0
    # The caller chose no temperature: the serving model's own default applies (modelstore/catalog.py Decoding).
    model_temperature: bool = False


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    params: GenerationParams = field(default_factory=GenerationParams)
    request_id: str = ""
    # Text the assistant already said: generation continues it (a cloud answer that broke off mid-stream).
    continuation: str = ""
    # Whose request (when known): lets a model-version A/B keep each user on one version (modelstore/swap.py).
    user_id: str | None = None
    # A GBNF grammar the output must follow (structured output, e.g. suggestion chips). Only backends with
    # ``supports_grammar = True`` honour it; the others refuse such a request rather than return free text.
    grammar: str | None = None
    # Decode this many alternative one-line answers side by side (suggestion chips), each starting differently;
    # the text is one line per answer. Needs a grammar that ends after one line. Only backends with
    # ``supports_branches = True`` honour it.
    branches: int = 1


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    usage: Usage
    model: str
    first_token_ms: float | None = None
    total_ms: float = 0.0
    queue_ms: float = 0.0


@dataclass
class Chunk:
    text: str = ""
    final: Completion | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str = ""
    queue_depth: int = 0
    queue_capacity: int = 0


@dataclass(frozen=True)
class BackendInfo:
    name: str
    kind: Literal["local", "cloud", "pool"]
    model: str
    context_size: int | None = None
    details: dict[str, object] = field(default_factory=dict)


class Backend(Protocol):
    async def chat(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]: ...

    async def health(self) -> Health: ...

    def info(self) -> BackendInfo: ...


async def collect(chunks: AsyncIterator[Chunk]) -> Completion | None:
    """Consume a ``stream()`` into one Completion (its text joined); None if it ended without a final chunk.

    The stream is closed on every way out, so an abandoned generation frees its backend's slot.
    """
    text: list[str] = []
    async with aclosing(chunks) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            if chunk.final is not None:
                chunk.final.text = "".join(text)
                return chunk.final
            text.append(chunk.text)
    return None
