"""Wire shapes of the plan's hybrid API (camelCase), and conversions to and from the engine's types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.modelstore.devices import CAPABILITY_ALIASES, Capability
from upcoach.routing.engine import HybridRequest, Outcome
from upcoach.routing.policy import Decision, Device, Hints, LiveState
from upcoach.storage.requests import RequestRecord

MAX_MESSAGE_CHARS = 32_000


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class HybridMessage(_Camel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message content is blank")
        return value


class RoutingHints(_Camel):
    prefer_local: bool = False
    max_latency: float | None = Field(default=None, gt=0, le=600_000, description="latency budget in ms")
    # Private is the safe default: content leaves our side only when the caller says it may.
    privacy_level: Literal["public", "private", "sensitive"] = "private"


def _capability_spelling(values: object) -> object:
    """Older app builds send other spellings of the runtime capability, in any case: read them as the enum."""
    if not isinstance(values, list):
        return values
    spelled = [v.strip().lower() if isinstance(v, str) else v for v in values]
    return [CAPABILITY_ALIASES.get(v, v) if isinstance(v, str) else v for v in spelled]


class DeviceProfile(_Camel):
    model: str = Field(default="", max_length=128)
    # The same declared enum as /api/devices and /api/ai/models/recommend: an unknown capability is a 400.
    capabilities: Annotated[list[Capability], BeforeValidator(_capability_spelling)] = Field(
        default_factory=list, max_length=64
    )
    battery_level: float | None = Field(default=None, ge=0, le=100)


class HybridProcessRequest(_Camel):
    messages: list[HybridMessage] = Field(min_length=1, max_length=256)
    routing_hints: RoutingHints = Field(default_factory=RoutingHints)
    device_profile: DeviceProfile | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=2)  # None: the model's default (catalog)
    stream: bool = False

    @field_validator("messages")
    @classmethod
    def _needs_user(cls, value: list[HybridMessage]) -> list[HybridMessage]:
        if not any(m.role == "user" for m in value):
            raise ValueError("at least one user message is required")
        return value

    def to_engine(self, request_id: str, user_id: str | None, max_tokens: int | None = None) -> HybridRequest:
        hints = self.routing_hints
        device = None
        if self.device_profile is not None:
            device = Device(
                self.device_profile.model,
                frozenset(c.value for c in self.device_profile.capabilities),
                self.device_profile.battery_level,
            )
        return HybridRequest(
            messages=tuple(ChatMessage(m.role, m.content) for m in self.messages),
            params=GenerationParams(
                max_tokens=max_tokens or self.max_tokens,
                temperature=0.7 if self.temperature is None else self.temperature,
                model_temperature=self.temperature is None,
            ),
            hints=Hints(hints.privacy_level, hints.prefer_local, hints.max_latency),
            request_id=request_id,
            endpoint="hybrid",
            user_id=user_id,
            device=device,
        )


def outcome_body(outcome: Outcome) -> dict[str, Any]:
    return {
        "response": {"role": "assistant", "content": outcome.text},
        "processingMode": outcome.processing_mode,
        "metrics": {
            "latency": round(outcome.latency_ms, 2),
            "firstTokenLatency": round(outcome.first_token_ms, 2) if outcome.first_token_ms is not None else None,
            "tokensGenerated": outcome.usage.completion_tokens,
            "promptTokens": outcome.usage.prompt_tokens,
            "costsIncurred": round(outcome.cost_usd, 8),
            "costAvoided": round(max(0.0, outcome.cloud_equivalent_usd - outcome.cost_usd), 8),
        },
        "routing": {
            "backend": outcome.backend,
            "decision": outcome.decision,
            "reasons": outcome.reasons,
            "fallbackUsed": outcome.fallback_used,
            "complexity": outcome.complexity,
            "redactions": outcome.redactions or {},
            "flags": outcome.flags,
        },
        "finishReason": outcome.finish_reason,
        "requestId": outcome.request_id,
        # Library strategies the answer was grounded in (or, after failed answer checks, answered from): the app
        # links them. promptVersion: the version of our built-in prompt text (persona, material) that was added to
        # the conversation; null when none was.
        "strategyIds": outcome.strategy_ids,
        "promptVersion": outcome.prompt_version,
    }


def route_body(decision: Decision, state: LiveState) -> dict[str, Any]:
    return {
        "decision": decision.target,
        "runOnDevice": decision.on_device,
        "reasons": list(decision.reasons),
        "deviceReasons": list(decision.device_reasons),
        "cloudAllowed": decision.cloud_allowed,
        "region": decision.region,
        "complexity": decision.complexity,
        "estimates": {"localFirstTokenMs": round(state.local_ttft_ms), "cloudFirstTokenMs": round(state.cloud_ttft_ms)},
        "error": decision.error_code,
    }


def record_body(record: RequestRecord) -> dict[str, Any]:
    """One request record on the wire: routing metadata, never message text."""
    return {
        "requestId": record.id,
        "createdAt": record.created_at.isoformat(),
        "endpoint": record.endpoint,
        "privacyLevel": record.privacy_level,
        "decision": record.decision,
        "processingMode": record.processing_mode,
        "backend": record.backend,
        "region": record.region,
        "reasons": list(record.reasons),
        "fallbackUsed": record.fallback_used,
        "outcome": record.outcome,
        "errorCode": record.error_code,
        "latencyMs": round(record.latency_ms, 2),
        "firstTokenMs": round(record.first_token_ms, 2) if record.first_token_ms is not None else None,
        "promptTokens": record.prompt_tokens,
        "completionTokens": record.completion_tokens,
        "costUsd": round(record.cost_usd, 8),
        "redactions": record.redactions or {},
    }


# ---- answers (what the functions above build, for the OpenAPI spec) ------------------------------------------------
class _Out(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class AnswerMessage(_Out):
    role: Literal["assistant"]
    content: str


class AnswerMetrics(_Out):
    latency: float
    first_token_latency: float | None
    tokens_generated: int
    prompt_tokens: int
    costs_incurred: float
    cost_avoided: float


class AnswerRouting(_Out):
    backend: str
    decision: str | None
    reasons: list[str]
    fallback_used: bool
    complexity: float | None
    redactions: dict[str, int]
    flags: list[str]


class OfflineOut(_Out):
    reason: str
    strategy_ids: list[str]
    error: str


class ProcessOut(_Out):
    """``stream: false``; with ``stream: true``: text/event-stream of ``token`` events, then one ``done`` event
    holding this object (or an ``error`` event). ``offline`` only when the offline fallback answered."""

    response: AnswerMessage
    processing_mode: str
    metrics: AnswerMetrics
    routing: AnswerRouting
    finish_reason: str | None
    request_id: str
    strategy_ids: list[str] | None = None
    prompt_version: str | None = None
    offline: OfflineOut | None = None


class Estimates(_Out):
    local_first_token_ms: int
    cloud_first_token_ms: int


class RouteOut(_Out):
    decision: str | None
    run_on_device: bool
    reasons: list[str]
    device_reasons: list[str]
    cloud_allowed: bool
    region: str | None
    complexity: float
    estimates: Estimates
    error: str | None


class UsageSummaryOut(_Out):
    total: int
    by_mode: dict[str, int]
    local_share: float | None
    fallbacks: int
    errors: int
    cost_incurred_usd: float
    cloud_equivalent_usd: float
    cost_avoided_usd: float
    prompt_tokens: int
    completion_tokens: int


class RecordOut(_Out):
    request_id: str
    created_at: str
    endpoint: str
    privacy_level: str
    decision: str | None
    processing_mode: str
    backend: str
    region: str | None
    reasons: list[str]
    fallback_used: bool
    outcome: str
    error_code: str | None
    latency_ms: float
    first_token_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    redactions: dict[str, int]


class RecordPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: Literal["list"]
    data: list[RecordOut]
    has_more: bool
    next_offset: int | None


class InjectionScan(_Out):
    verdict: str
    score: float
    signals: list[str]


class PiiEntity(_Out):
    type: str
    start: int
    end: int


class PiiScan(_Out):
    entities: list[PiiEntity]


class SpecialCategoryScan(_Out):
    categories: list[str]
    self_harm: bool


class ScanOut(_Out):
    """Positions and types only, never the text found."""

    injection: InjectionScan
    pii: PiiScan
    special_category: SpecialCategoryScan
