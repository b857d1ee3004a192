"""Wire shapes of the service routes (health, version, audit) and of the OpenAI-style /v1 answers and helpers, for
the OpenAPI spec. Keys are as the routes have always sent them (snake_case, like OpenAI and llama-server)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthOut(_Out):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Everyone sees ``status``; admins and auditors also see why it is unavailable (``reasons``), or the live
    engine figures when ready (``model``, ``local``, ``worker``)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "unavailable"]
    reasons: list[str] | None = None
    model: str | None = None
    local: dict[str, Any] | None = None
    worker: int | None = None


class VersionOut(_Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: str | None
    build: str | None
    model: str | None
    schema_revision: str | None = Field(alias="schemaRevision")


class AuditEventOut(_Out):
    id: int
    created_at: str
    actor: str
    actor_role: str
    action: str
    target: str | None
    details: dict[str, Any]
    prev_hmac: str
    hmac: str


class AuditPage(_Out):
    """``format=json``; ``format=jsonl`` streams the same events one per line (application/x-ndjson)."""

    object: Literal["list"]
    data: list[AuditEventOut]
    has_more: bool
    last_id: int | None


class TokensOut(_Out):
    tokens: list[int]


class ContentOut(_Out):
    content: str


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class EmbeddingOut(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Out):
    object: Literal["list"]
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage


class MessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoiceOut(BaseModel):
    index: int
    message: MessageOut
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletionOut(BaseModel):
    """``stream: false``; with ``stream: true`` the answer is text/event-stream of chat.completion.chunk objects.
    ``upcoach`` is added when the answer came from the offline fallback (OpenAI clients ignore it)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoiceOut]
    usage: dict[str, Any] | None = None
    upcoach: dict[str, Any] | None = None


class TextChoiceOut(BaseModel):
    text: str
    index: int
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None


class TextCompletionOut(BaseModel):
    """``stream: false``; with ``stream: true`` the answer is text/event-stream of the same objects."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoiceOut]
    usage: dict[str, Any] | None = None


def json_or_stream(model: type[BaseModel], stream: str = "text/event-stream") -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose 200 is JSON (``model``) or a stream of another media type."""
    return {200: {"model": model, "content": {stream: {"schema": {"type": "string"}}}}}
