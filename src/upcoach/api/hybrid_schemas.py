"""Wire shapes of the plan's hybrid API (camelCase), and conversions to and from the engine's types."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from upcoach.llm.base import ChatMessage, GenerationParams
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


class DeviceProfile(_Camel):
    model: str = Field(default="", max_length=128)
    capabilities: list[str] = Field(default_factory=list, max_length=64)
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
                frozenset(c.lower() for c in self.device_profile.capabilities),
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
