"""OpenAI chat-completions wire format (the subset the official SDK sends), and conversions to internal types."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from upcoach.llm.base import ChatMessage, GenerationParams, Usage


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class WireMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    messages: list[WireMessage] = Field(min_length=1, max_length=512)
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # None: the model's default (catalog)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def messages_internal(self) -> tuple[ChatMessage, ...]:
        return tuple(ChatMessage(m.role, m.text()) for m in self.messages)

    def params(self) -> GenerationParams:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=0.7 if self.temperature is None else self.temperature,
            model_temperature=self.temperature is None,
            top_p=self.top_p,
            stop=stops,
            seed=self.seed,
        )


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def completion_dict(completion_id: str, model: str, text: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": _finish(finish_reason),
                "logprobs": None,
            }
        ],
        "usage": usage_dict(usage),
    }


def chunk_dict(
    completion_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, str] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    with_choice: bool = True,
) -> dict[str, Any]:
    choices = (
        [{"index": 0, "delta": delta or {}, "finish_reason": _finish(finish_reason) if finish_reason else None,
          "logprobs": None}]
        if with_choice
        else []
    )  # fmt: skip
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage_dict(usage)
    return body
