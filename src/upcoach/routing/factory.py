"""The hybrid engine as it ships: the one place that wires its guard, redaction, canary, privacy lookup, cloud
endpoints per region, breakers, budget and audit hooks. create_app and the engine tests both build it here, so a
test cannot pass on a wiring that never runs in production."""

from __future__ import annotations

from collections.abc import Sequence

from upcoach.coaching.prompts import CoachingPrompts
from upcoach.coaching.strategies import StrategyRepository
from upcoach.config import Settings
from upcoach.llm.base import Backend
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.privacy import special_category
from upcoach.routing.breaker import BreakerStore, CircuitBreaker, breaker_config_from_settings
from upcoach.routing.costs import CloudBudget, PriceTable
from upcoach.routing.engine import HybridEngine, HybridRequest, PrivacyLookup, RecordFn, RegionalCloud
from upcoach.routing.learned_store import load_ab, load_active
from upcoach.routing.policy import PolicyConfig
from upcoach.security.guard import Guard, Refusal


def _cloud_client(settings: Settings, name: str, base_url: str, model: str, api_key: str | None) -> OpenAICompatBackend:
    return OpenAICompatBackend(
        name=name, base_url=base_url, model=model, api_key=api_key, kind="cloud",
        connect_timeout=settings.cloud_connect_timeout, first_token_timeout=settings.cloud_first_token_timeout,
        total_timeout=settings.cloud_total_timeout, max_inflight=settings.cloud_max_inflight,
    )  # fmt: skip


def cloud_backend(settings: Settings) -> OpenAICompatBackend | None:
    """The legacy cloud endpoint (UPCOACH_CLOUD_BASE_URL), used by users without a residency region."""
    if not settings.cloud_base_url:
        return None
    return _cloud_client(settings, "cloud", settings.cloud_base_url, settings.cloud_model, settings.cloud_api_key)


def regional_clouds(settings: Settings, store: BreakerStore) -> dict[str, RegionalCloud]:
    """One cloud endpoint and breaker per residency region (UPCOACH_CLOUD_REGIONS)."""
    regions: dict[str, RegionalCloud] = {}
    for name, region in settings.cloud_regions.items():
        backend = _cloud_client(settings, f"cloud-{name}", region.base_url, region.model, region.api_key)
        breaker = CircuitBreaker(f"cloud-{name}", breaker_config_from_settings(settings), store)
        regions[name] = RegionalCloud(backend, breaker, region.model)
    return regions


def build_guard(metrics: Metrics, audit: AuditLog) -> Guard:
    """The checks every route runs before text reaches a model; a check that raises is a counted, audited 503.

    The special-category tables are loaded here, so a malformed data file stops the app at start-up instead of
    refusing every request."""
    special_category.rules()

    async def audit_refusal(refusal: Refusal) -> None:
        await audit.append(
            refusal.user_id or "anonymous", "user", "request.refused", target=refusal.request_id,
            details={"reason": "security_check_failed", "check": refusal.check, "error": refusal.error,
                     "endpoint": refusal.endpoint},
        )  # fmt: skip

    return Guard(metrics=metrics, on_failure=audit_refusal)


def build_hybrid_engine(
    settings: Settings,
    *,
    local: Sequence[Backend],
    metrics: Metrics,
    record: RecordFn,
    audit: AuditLog,
    privacy: PrivacyLookup,
    breaker_store: BreakerStore,
    redis: object | None = None,
    strategies: StrategyRepository | None = None,
) -> HybridEngine:
    """The engine create_app serves with. Close it with ``aclose`` (it owns its cloud clients).

    ``strategies`` is the library the answers are grounded in and fall back to when the answer checks fail."""
    cloud = cloud_backend(settings)

    async def audit_flags(request: HybridRequest, flags: list[str]) -> None:
        action = "request.blocked" if "prompt_injection_blocked" in flags else "request.flagged"
        await audit.append(
            request.user_id or "anonymous", "user", action, target=request.request_id,
            details={"flags": flags, "endpoint": request.endpoint},
        )  # fmt: skip

    return HybridEngine(
        local=local,
        cloud=cloud,
        cloud_breaker=CircuitBreaker("cloud", breaker_config_from_settings(settings), breaker_store) if cloud else None,
        cloud_model=settings.cloud_model,
        prices=PriceTable.from_settings(settings),
        budget=CloudBudget(settings.cloud_budget_usd_per_day, redis),
        policy=PolicyConfig(
            settings.complexity_threshold, load_active(settings), settings.router_explore, load_ab(settings)
        ),
        metrics=metrics,
        record=record,
        guard=build_guard(metrics, audit),
        on_flag=audit_flags,
        regions=regional_clouds(settings, breaker_store),
        privacy=privacy,
        prompts=CoachingPrompts(strategies, persona=settings.coach_persona, grounding=settings.grounding),
        answer_checks=settings.answer_checks,
    )
