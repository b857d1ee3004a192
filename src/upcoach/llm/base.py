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
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant", "tool", "developer"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    # OpenAI tool-call ids: of an assistant message's calls (its content carries the calls themselves as text,
    # llm/structured.py), or the one call a ``tool`` message answers. Cloud peers need them back; the text does not.
    call_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # Token id -> bias added to its logit (OpenAI's -100..100; -100 bans the token, 100 all but forces it).
    logit_bias: tuple[tuple[int, float], ...] = ()

    # Log probabilities of the chosen tokens (None: not asked), with this many most likely alternatives each
    # (OpenAI's top_logprobs, 0..20). Computed by the local engine; remote peers pass them on.
    logprobs: int | None = None
    # Independent answers to the same prompt (OpenAI's n): the local engine decodes them side by side from one
    # prefilled prompt, each choice with its own seed (``seed + index``); their chunks carry ``Chunk.index``.
    n: int = 1

    # Penalty on tokens already in the context (1.0: none). Honoured by the llama.cpp engine.
    repeat_penalty: float = 1.0
    # The caller chose no temperature: the serving model's own default applies (modelstore/catalog.py Decoding).
    model_temperature: bool = False


@dataclass(frozen=True)
class ResponseFormat:
    """OpenAI ``response_format``: ``json_object`` (any JSON object) or ``json_schema`` (that schema)."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str = "response"
    strict: bool = False


@dataclass(frozen=True)
class Function:
    name: str
    parameters: dict[str, Any]
    description: str = ""
    strict: bool = False


@dataclass(frozen=True)
class Tools:
    """OpenAI ``tools`` + ``tool_choice`` (``auto``, ``none``, ``required`` or one function's name) +
    ``parallel_tool_calls``. ``none`` keeps the tools known (a cloud peer reads the earlier calls against them) but
    allows no call: the local model then sees no tools at all (``active``)."""

    functions: tuple[Function, ...]
    choice: str = "auto"
    parallel: bool = True

    @property
    def active(self) -> bool:
        return self.choice != "none"


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
    # Structured output and tool calls as the caller asked for them (OpenAI semantics). Remote OpenAI-compatible
    # backends pass them on; for the local engine llm/structured.py turns them into ``grammar`` and prompt text.
    response_format: ResponseFormat | None = None
    tools: Tools | None = None
    # Legacy text completion (/v1/completions): continue this raw text instead of the messages rendered with the
    # chat template. Only the local engine honours it; remote backends refuse it.
    prompt: str | None = None
    # Work nobody waits for yet (suggestion chips computed ahead, coaching/chips_ahead.py): the local engine admits
    # it after every user request, gives its slot to a user request that needs one, and drops it if it waited too
    # long (llm/admission.py). Other backends ignore it.
    background: bool = False


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


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    raw: bytes  # the token's bytes (``token`` is them decoded, with U+FFFD where a character is split)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability under the model, with the most likely alternatives (best first)."""

    token: str
    logprob: float
    raw: bytes
    top: tuple[TopLogprob, ...] = ()


@dataclass
class Chunk:
    text: str = ""
    final: Completion | None = None
    # Which choice of an n > 1 request the text belongs to; only choice 0 carries ``final``.
    index: int = 0
    # The generated tokens this text came from, when ``GenerationParams.logprobs`` asked for them. A piece held
    # back by the stop-sequence matcher arrives later as text: a chunk may carry logprobs and no text yet.
    logprobs: tuple[TokenLogprob, ...] = ()
    # Another choice (index > 0) ended: its finish reason; choice 0's is ``final.finish_reason``.
    finish: FinishReason | None = None


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
    """Consume a ``stream()`` into one Completion (choice 0's text joined); None if it ended without a final chunk.

    The stream is closed on every way out, so an abandoned generation frees its backend's slot.
    """
    text: list[str] = []
    async with aclosing(chunks) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            if chunk.final is not None:
                chunk.final.text = "".join(text)
                return chunk.final
            if chunk.index == 0:
                text.append(chunk.text)
    return None


def serving_engine(backend: Backend) -> object:
    """The engine that will serve: it may sit behind a wrapper that swaps model versions (modelstore/swap.py)."""
    return getattr(getattr(backend, "current", None), "engine", None) or backend


def follows_grammar(backend: Backend) -> bool:
    """Whether ``backend`` honours ``ChatRequest.grammar`` (the local engine); remote peers pass requests on."""
    return bool(getattr(serving_engine(backend), "supports_grammar", False))
