"""What the dashboard pages show, turned from records and aggregates into display values and charts.

Kept apart from the routes so that the wording a user reads about their own requests is in one place, and so the
templates receive finished strings instead of doing arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from upcoach.coaching.ratings import TARGET_AVERAGE
from upcoach.security.acting import VIEWED
from upcoach.storage.audit import AuditEvent
from upcoach.storage.dashboard import LatencyPercentiles, TimelinePoint
from upcoach.storage.requests import RequestRecord, UsageSummary
from upcoach.web.charts import Chart, Series, bar_chart

WHERE = {"local": "On our server", "cloud": "Cloud", "hybrid": "Local and cloud", "none": "Not answered"}
MODE_NAMES = {"local": "local", "cloud": "cloud", "hybrid": "hybrid", "none": "not answered"}
# What another principal did with the user's data, by security/acting.py's use names.
USE_WORDS = {
    "act": "a request in your name",
    "journal": "your journal entries",
    "insights": "your journal insights",
    "requests": "your request records",
    "privacy": "your privacy settings or export",
    "privacy_change": "your privacy settings or data",
}


@dataclass(frozen=True)
class RequestRow:
    id: str
    when: str
    when_iso: str
    mode: str  # local | cloud | hybrid | none: a CSS hook and what the tests look for
    where: str
    backend: str
    region: str
    fallback: bool
    outcome: str
    reasons: list[str]
    redactions: list[tuple[str, int]]
    prompt_tokens: int
    completion_tokens: int
    cost: str
    cloud_equivalent: str


def when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def usd(value: float) -> str:
    # Per-request costs are fractions of a cent: keep enough digits that they do not all read $0.00.
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}"


@dataclass(frozen=True)
class AccessRow:
    """One time another principal read or acted on the user's data ("who looked at my data")."""

    when: str
    when_iso: str
    who: str
    role: str
    viewed: bool
    what: str
    route: str


def access_row(event: AuditEvent) -> AccessRow:
    use = str(event.details.get("use", ""))
    return AccessRow(
        when=when(event.created_at),
        when_iso=event.created_at.isoformat(),
        who=event.actor,
        role=event.actor_role,
        viewed=event.action == VIEWED,
        what=USE_WORDS.get(use, use),
        route=str(event.details.get("route", "")),
    )


def request_row(record: RequestRecord) -> RequestRow:
    outcome = record.outcome if record.error_code is None else f"{record.outcome} ({record.error_code})"
    return RequestRow(
        id=record.id,
        when=when(record.created_at),
        when_iso=record.created_at.isoformat(),
        mode=record.processing_mode,
        where=WHERE.get(record.processing_mode, record.processing_mode),
        backend=record.backend,
        region=record.region or "",
        fallback=record.fallback_used,
        outcome=outcome,
        reasons=list(record.reasons),
        # Types and counts only: the record never holds the values, and the page must not pretend otherwise.
        redactions=sorted((kind, int(count)) for kind, count in (record.redactions or {}).items() if count),
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost=usd(record.cost_usd),
        cloud_equivalent=usd(record.cloud_cost_equivalent_usd),
    )


def _short_bucket(bucket: str) -> str:
    # "2026-11-25 14:00" -> "14:00"; "2026-11-25" -> "11-25": the full value is in the tooltip and the table.
    return bucket[11:] if len(bucket) > 10 else bucket[5:]


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def admin_charts(timeline: Sequence[TimelinePoint], latency: Sequence[LatencyPercentiles]) -> list[Chart]:
    buckets = [p.bucket for p in timeline]
    return [
        bar_chart(
            id="chart-local-share",
            title="Local share over time",
            description="Share of requests answered on our own server, per time bucket (UTC).",
            categories=buckets,
            series=[Series("local share", "series-local", [100 * p.local_share for p in timeline])],
            fmt=_percent,
            short=_short_bucket,
            category_header="time (UTC)",
            y_max=100,
        ),
        bar_chart(
            id="chart-latency",
            title="Latency per processing mode",
            description="Median (P50) and 95th percentile (P95) end-to-end latency of successful requests.",
            categories=[MODE_NAMES.get(row.mode, row.mode) for row in latency],
            series=[
                Series("P50", "series-p50", [row.p50_ms for row in latency]),
                Series("P95", "series-p95", [row.p95_ms for row in latency]),
            ],
            fmt=_ms,
            category_header="mode",
        ),
        bar_chart(
            id="chart-events",
            title="Fallbacks and circuit-breaker events",
            description="Requests answered by another backend than decided, and requests the open cloud "
            "circuit breaker kept local, per time bucket (UTC).",
            categories=buckets,
            series=[
                Series("fallbacks", "series-fallback", [p.fallbacks for p in timeline]),
                Series("breaker events", "series-breaker", [p.breaker_events for p in timeline]),
                Series("errors", "series-error", [p.errors for p in timeline]),
            ],
            fmt=_count,
            short=_short_bucket,
            category_header="time (UTC)",
            integer=True,
        ),
        bar_chart(
            id="chart-cost",
            title="Cloud cost incurred and avoided",
            description="What the cloud cost, and what the locally answered requests would have cost there "
            "(cloud equivalent minus cost), per time bucket (UTC).",
            categories=buckets,
            series=[
                Series("incurred", "series-cost", [p.cost_usd for p in timeline]),
                Series("avoided", "series-avoided", [p.cost_avoided_usd for p in timeline]),
            ],
            fmt=usd,
            short=_short_bucket,
            category_header="time (UTC)",
        ),
    ]


@dataclass(frozen=True)
class QualityRow:
    mode: str
    model: str
    count: int
    average: str
    meets_target: bool


MAX_GROUP_LABEL = 20


def _rating(value: float) -> str:
    return f"{value:.1f}"


def _short_group(group: str) -> str:
    # Model names can be long file names: the axis shows the start, the tooltip and the tables the whole name.
    return group if len(group) <= MAX_GROUP_LABEL else group[: MAX_GROUP_LABEL - 1] + "\u2026"


def quality(summary: Mapping[str, Any]) -> tuple[Chart, list[QualityRow]]:
    """The answer-quality chart and table from ``Ratings.summary``: one bar per processing mode and model."""
    groups: Sequence[Mapping[str, Any]] = summary["groups"]
    target = float(summary.get("target", TARGET_AVERAGE))
    rows = [
        QualityRow(
            mode=MODE_NAMES.get(g["processingMode"], g["processingMode"]),
            model=g["model"],
            count=int(g["count"]),
            average=f"{float(g['averageRating']):.2f}",
            meets_target=float(g["averageRating"]) >= target,
        )
        for g in groups
    ]
    chart = bar_chart(
        id="chart-quality",
        title="Answer quality per mode and model",
        description=f"Average user rating (1 to 5) of the answers given in this period, per processing mode and "
        f"model; the dashed line is the plan's target of {target:.1f}/5.",
        categories=[f"{row.mode} / {row.model}" for row in rows],
        series=[Series("average rating", "series-rating", [float(g["averageRating"]) for g in groups])],
        fmt=_rating,
        short=_short_group,
        category_header="mode / model",
        y_max=5,
        ticks=5,
        reference=(target, f"target {target:.1f}"),
        empty_text="No rated answers in this period.",
    )
    return chart, rows


@dataclass(frozen=True)
class Shares:
    """Where answers were made: on phones (noisy counts the phones report), on the server's local model, in the
    cloud. ``local_share`` counts the phone and the server's local model together: the plan's local target."""

    device: float
    library: float
    server_local: int
    cloud: int

    @property
    def total(self) -> float:
        return self.device + self.library + self.server_local + self.cloud

    def share(self, part: float) -> float:
        return part / self.total if self.total > 0 else 0.0

    @property
    def local_share(self) -> float:
        return self.share(self.device + self.server_local)


def device_shares(summary: UsageSummary, device: float, library: float) -> Shares:
    # Noise can push a sum below zero over few phones: a negative count is shown as none.
    return Shares(max(0.0, round(device)), max(0.0, round(library)), summary.by_mode.get("local", 0),
                  summary.by_mode.get("cloud", 0))  # fmt: skip
