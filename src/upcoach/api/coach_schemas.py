"""Answers of the coaching API (camelCase), for the OpenAPI spec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ChipOut(_Out):
    text: str
    source: str


class SuggestionsOut(_Out):
    crisis_resources: str | None = Field(description="set (and shown first) on signs of self-harm")
    suggestions: list[ChipOut]
    source: str
    model: str | None
    latency_ms: float
    model_latency_ms: float | None
    reason: str | None
    strategy_ids: list[str]
    style: str
    locale: str
    count: int
    request_id: str
    flags: list[str]
    precomputed: bool = Field(description="answered from the chips written ahead, after this conversation's answer")


class StrategyOut(_Out):
    id: str
    locale: str
    category: str
    title: str
    summary: str
    steps: list[str]
    tags: list[str]
    chips: list[str]


class StrategyHit(StrategyOut):
    score: float


class StrategySearchOut(_Out):
    data: list[StrategyHit]
    count: int
    version: str | None


class BundleChanges(_Out):
    added: list[StrategyOut]
    updated: list[StrategyOut]
    removed: list[str]


class BundleOut(_Out):
    """The signed bundle: every strategy (``full``), or the changes since a version the app holds. ``signature``
    covers the canonical JSON of the rest (GET /api/coach/strategies/signing-key has the key)."""

    format: str
    version: str
    created_at: str
    key_id: str
    full: bool
    since: str | None = None
    since_unknown: bool | None = None
    strategies: list[StrategyOut] | None = None
    changes: BundleChanges | None = None
    signature: str
