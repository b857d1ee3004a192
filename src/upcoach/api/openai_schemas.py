"""OpenAI chat-completions wire format (the subset the official SDK sends), and conversions to internal types."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from upcoach.llm.base import ChatMessage, Function, GenerationParams, ResponseFormat, TokenLogprob, Tools, Usage
from upcoach.llm.sampling import MAX_CHOICES, MAX_TOP_LOGPROBS
from upcoach.llm.structured import ToolCall, call_text, check_schema


def unsupported(what: str) -> PydanticCustomError:
    """A field (or value) we refuse rather than drop: 400 ``unsupported_parameter`` naming it (api/errors.py)."""
    return PydanticCustomError("unsupported_parameter", "{what} is not supported", {"what": what})


class OpenAIWire(BaseModel):
    # A field nobody listed is refused (400 unsupported_parameter), never dropped: see REQUEST_FIELDS.
    model_config = ConfigDict(extra="forbid")


class TextPart(OpenAIWire):
    type: Literal["text"]  # other kinds are refused by WireMessage._text_parts
    text: str


class WireFunctionCall(OpenAIWire):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(default="{}", max_length=65536)


class WireToolCall(OpenAIWire):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: WireFunctionCall


class WireMessage(OpenAIWire):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None  # accepted and ignored (participant names)
    refusal: str | None = None  # accepted and ignored (a previous answer's refusal text)
    tool_calls: list[WireToolCall] | None = Field(default=None, max_length=64)
    tool_call_id: str | None = Field(default=None, max_length=256)
    audio: None = None
    function_call: None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: object) -> object:
        for part in value if isinstance(value, list) else ():
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise unsupported(f"content parts of type {kind!r} (only text)")
        return value

    @field_validator("audio", "function_call", mode="before")
    @classmethod
    def _refused(cls, value: object, info: ValidationInfo) -> None:
        if value is not None:
            raise unsupported(f"{info.field_name} in messages (use tool_calls)")
        return None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    @model_validator(mode="after")
    def _tool_fields(self) -> WireMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def internal(self) -> ChatMessage:
        if self.role == "tool":
            assert self.tool_call_id is not None  # checked in _tool_fields
            return ChatMessage("tool", self.text(), (self.tool_call_id,))
        if self.role == "assistant" and self.tool_calls:
            calls = [call_text(c.function.name, c.function.arguments) for c in self.tool_calls]
            text = "\n".join(([self.text()] if self.text() else []) + calls)
            return ChatMessage("assistant", text, tuple(c.id for c in self.tool_calls))
        return ChatMessage(self.role, self.text())


class StreamOptions(OpenAIWire):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted and ignored: we add no obfuscation padding


class WireFunction(OpenAIWire):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(default="", max_length=8192)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class WireTool(OpenAIWire):
    type: str
    function: WireFunction

    @field_validator("type")
    @classmethod
    def _function_only(cls, value: str) -> str:
        if value != "function":
            raise unsupported(f"tools of type {value!r} (only function)")
        return value


class NamedFunction(OpenAIWire):
    name: str


class NamedToolChoice(OpenAIWire):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(OpenAIWire):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class WireResponseFormat(OpenAIWire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


# Fields refused unless they hold the value that means "not used" (OpenAI's default): 400 unsupported_parameter.
REFUSED_UNLESS: dict[str, tuple[object, ...]] = {
    "store": (None, False),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "web_search_options": (None,),
    "functions": (None,),
    "function_call": (None,),
}


class ChatCompletionRequest(OpenAIWire):
    model: str = Field(min_length=1, max_length=256)
    messages: list[WireMessage] = Field(min_length=1, max_length=512)
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)  # None: the model's default (catalog)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(default=None, max_length=1024)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    response_format: WireResponseFormat | None = None
    tools: list[WireTool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Accepted and ignored (README, "OpenAI fields"): hints about billing, caching and reasoning that change
    # nothing in the answer of the models we run.
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prediction: dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    # Refused unless unused (REFUSED_UNLESS).
    store: bool | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    @field_validator(*REFUSED_UNLESS, mode="before")
    @classmethod
    def _refused(cls, value: object, info: ValidationInfo) -> object:
        if value not in REFUSED_UNLESS[info.field_name or ""]:
            reasons = {
                "store": "store (completions are not stored for later retrieval)",
                "functions": "functions (use tools)",
                "function_call": "function_call (use tool_choice)",
            }
            raise unsupported(reasons.get(info.field_name or "", info.field_name or "this field"))
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    @field_validator("n")
    @classmethod
    def _one_set_of_calls(cls, value: int | None, info: ValidationInfo) -> int | None:
        if (value or 1) > 1 and info.data.get("tools") and info.data.get("tool_choice") != "none":
            raise unsupported("n > 1 with tools (one set of tool calls per request)")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return token_id_keys(value)

    @model_validator(mode="after")
    def _tool_references(self) -> ChatCompletionRequest:
        names = {t.function.name for t in self.tools or ()}
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools")
        if self.tool_choice in ("required",) and not names:
            raise ValueError("tool_choice 'required' needs tools")
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema")
        return self

    def messages_internal(self) -> tuple[ChatMessage, ...]:
        return tuple(m.internal() for m in self.messages)

    def params(self) -> GenerationParams:
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=0.7 if self.temperature is None else self.temperature,
            model_temperature=self.temperature is None,
            top_p=self.top_p,
            stop=stops,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items()),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            n=self.n or 1,
        )

    def output_format(self) -> ResponseFormat | None:
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return ResponseFormat("json_object")
        assert fmt.json_schema is not None  # checked in _tool_references
        schema = fmt.json_schema.schema_ or {"type": "object"}
        check_schema(schema, "response_format.json_schema.schema")
        return ResponseFormat("json_schema", schema, fmt.json_schema.name, bool(fmt.json_schema.strict))

    def tool_set(self) -> Tools | None:
        if not self.tools:
            return None
        functions = []
        for index, tool in enumerate(self.tools):
            parameters = tool.function.parameters or {"type": "object", "properties": {}}
            check_schema(parameters, f"tools.{index}.function.parameters")
            functions.append(
                Function(tool.function.name, parameters, tool.function.description, bool(tool.function.strict))
            )
        choice = self.tool_choice
        named = choice.function.name if isinstance(choice, NamedToolChoice) else choice or "auto"
        return Tools(tuple(functions), named, self.parallel_tool_calls is not False)


def token_id_keys(value: dict[str, float] | None) -> dict[str, float] | None:
    """``logit_bias`` as OpenAI sends it: token ids (as strings) to biases; anything else is the caller's error."""
    for key in value or {}:
        if not key.isdigit():
            raise ValueError(f"logit_bias keys are token ids; {key!r} is not one")
    return value


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _finish(reason: str, tool_calls: bool = False) -> str:
    if reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_calls_wire(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": new_call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls
    ]


def logprobs_wire(entries: list[TokenLogprob] | tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    """OpenAI's ``choices[].logprobs`` of a chat completion: ``{"content": [...]}`` (None when not asked)."""
    if entries is None:
        return None
    return {"content": [_token_wire(e) for e in entries], "refusal": None}


def _token_wire(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.raw),
        "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.raw)} for t in entry.top],
    }


def choice_dict(
    index: int,
    text: str | None,
    finish_reason: str,
    tool_calls: list[ToolCall] | None = None,
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls_wire(tool_calls)
    return {
        "index": index,
        "message": message,
        "finish_reason": _finish(finish_reason, bool(tool_calls)),
        "logprobs": logprobs_wire(logprobs),
    }


def completion_dict(
    completion_id: str,
    model: str,
    text: str | None,
    finish_reason: str,
    usage: Usage,
    tool_calls: list[ToolCall] | None = None,
    *,
    choices: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A chat completion: one choice from ``text`` (and ``tool_calls``), or the given ``choices`` (n > 1)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices if choices is not None else [choice_dict(0, text, finish_reason, tool_calls)],
        "usage": usage_dict(usage),
    }


def chunk_dict(
    completion_id: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
    with_choice: bool = True,
    tool_calls: bool = False,
    index: int = 0,
    logprobs: tuple[TokenLogprob, ...] | None = None,
) -> dict[str, Any]:
    choices = (
        [{"index": index, "delta": delta or {},
          "finish_reason": _finish(finish_reason, tool_calls) if finish_reason else None,
          "logprobs": logprobs_wire(logprobs)}]
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
