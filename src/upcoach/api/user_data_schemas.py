"""Answers of the per-user data routes: privacy settings, data rights, grants, journal, ratings and experiments
(camelCase where the routes have always sent it), for the OpenAPI spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from upcoach.api.device_schemas import GrantOut


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Snake(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- privacy -------------------------------------------------------------------------------------------------------
class PrivacySettingsOut(_Out):
    """The ETag header holds ``version``: send it back as If-Match (or ``version``) to change the settings."""

    processing_mode: Literal["local_only", "hybrid", "cloud_allowed"]
    special_category_cloud_opt_in: bool
    region: str | None
    retention_days: int
    analytics_opt_in: bool
    do_not_share: bool
    version: int
    updated_at: str | None
    available_regions: list[str]
    notices: list[str]


class ExportOut(_Out):
    user_id: str
    exported_at: str
    data: dict[str, Any] = Field(description="one entry per kind of data held")


class ErasedOut(_Out):
    deleted: dict[str, int] = Field(description="rows deleted per kind of data")


class GrantList(_Snake):
    object: Literal["list"]
    data: list[GrantOut]
    received: list[GrantOut]


# ---- journal -------------------------------------------------------------------------------------------------------
class SentimentOut(_Out):
    language: str
    compound: float | None
    label: str | None


class EntryOut(_Out):
    id: str
    recorded_at: str
    created_at: str
    transcript: str
    mood: int | None
    sentiment: SentimentOut
    themes: list[str]
    insight: str | None
    insight_status: str
    flags: list[str]


class EntryPage(_Snake):
    object: Literal["list"]
    data: list[EntryOut]
    has_more: bool
    next_offset: int | None


class ThemeCount(_Out):
    theme: str
    count: int


class EntryInsight(_Out):
    entry_id: str
    recorded_at: str
    insight: str


class InsightsOut(_Out):
    from_: str | None = Field(alias="from")
    to: str | None
    entries: int
    languages: dict[str, int]
    mood_trend: dict[str, list[dict[str, Any]]] = Field(description="daily and weekly")
    themes: list[ThemeCount]
    insights: list[EntryInsight]
    pending_insights: int
    models: dict[str, str]


# ---- ratings -------------------------------------------------------------------------------------------------------
class RatingOut(_Out):
    """201 for a request's first rating, 200 when it replaces an earlier one."""

    request_id: str
    rating: int
    comment: str | None
    created_at: str
    updated_at: str


class RatingGroupOut(_Out):
    processing_mode: str
    model: str
    count: int
    average_rating: float


class RatingSummaryOut(_Out):
    count: int
    average_rating: float | None
    target: float
    groups: list[RatingGroupOut]


# ---- experiments ---------------------------------------------------------------------------------------------------
class VariantOut(_Out):
    name: str
    weight: float
    config: dict[str, Any]


class MetricOut(_Out):
    name: str
    kind: Literal["rate", "mean"]
    min: float
    max: float


class ExperimentOut(_Out):
    key: str
    description: str
    variants: list[VariantOut]
    metrics: list[MetricOut]
    control: str
    status: str
    created_by: str
    created_at: str | None
    stopped_at: str | None


class ExperimentList(_Snake):
    object: Literal["list"]
    data: list[ExperimentOut]


class ExperimentResultsOut(_Out):
    """Exact figures per variant and metric, or (``dp=true``) Laplace-noised ones with the privacy budget spent."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    experiment: ExperimentOut
    dp: bool


class AssignmentOut(_Out):
    variant: str
    config: dict[str, Any]


class EventStoredOut(_Out):
    stored: bool = Field(description="false when the user did not opt in to analytics")
