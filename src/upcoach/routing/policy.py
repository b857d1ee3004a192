"""The routing policy: a pure function of (request features, hints, device, live backend state) -> decision.

No I/O, no clock, no randomness: every rule is testable exhaustively and every decision carries the
human-readable reasons the dashboard shows. Rule order is the privacy order: privacy first, then availability,
then the caller's latency preference, then complexity vs cost. The user's own privacy settings come before
everything: ``local_only`` and ``do_not_share`` keep every request off the cloud, including fallback and
spill-over (a 429 or 503 is better than a leak). A settings lookup that failed never reaches the policy: the
engine refuses such a request (503 ``security_check_failed``).

The last step is the only free one (issue 20): a learned router's score may replace the complexity score there, and
a share of those free choices may be explored, with the engine's random draw passed in (``FreeStep``). Every
decision says how it was made (``RoutingLog``: forced or free, propensity) for the request record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.features import RequestFeatures

PrivacyLevel = Literal["public", "private", "sensitive"]
Target = Literal["local", "cloud"]

LOW_BATTERY = 20
ON_DEVICE_CAPABILITIES = frozenset({"local-llm", "local_llm", "on-device-llm", "llm"})


@dataclass(frozen=True)
class Hints:
    privacy_level: PrivacyLevel = "private"
    prefer_local: bool = False
    max_latency_ms: float | None = None


@dataclass(frozen=True)
class Device:
    model: str = ""
    capabilities: frozenset[str] = frozenset()
    battery_level: float | None = None


@dataclass(frozen=True)
class LiveState:
    """What the backends look like right now (read by the engine just before deciding)."""

    local_available: bool
    local_queue_full: bool = False
    local_ttft_ms: float = 300.0
    cloud_configured: bool = False
    cloud_breaker_open: bool = False
    cloud_over_budget: bool = False
    cloud_ttft_ms: float = 800.0
    local_unavailable_reason: str = "local model unavailable"
    cloud_region: str | None = None  # the user's residency region: only that region's endpoint counts

    @property
    def cloud_usable(self) -> bool:
        return self.cloud_configured and not self.cloud_breaker_open and not self.cloud_over_budget


@dataclass(frozen=True)
class PolicyConfig:
    complexity_threshold: float = 0.5
    # The engine's free-step inputs (the policy itself reads none): the active learned router version
    # (routing/learned.py LearnedRouter; None: the complexity score decides), the exploration share, and a running
    # A/B between router versions (routing/learned_store.py RouterAB), which picks the version per user.
    router: Any = None
    explore: float = 0.0
    ab: Any = None


@dataclass(frozen=True)
class FreeStep:
    """What the free step (4) needs beyond the features, computed by the engine before deciding (the policy itself
    draws no random number and loads no model).

    ``p_local``: the learned router's chance that the local answer is good enough (None: the complexity score
    decides, as before). ``explore``: the share of free choices that take the other side
    (``UPCOACH_ROUTER_EXPLORE``); ``draw`` a uniform number in [0, 1) the engine drew for this request;
    ``explorable``: the engine's verdict that this request may be explored (public, no special-category data, the
    user opted in to analytics). Exploration never touches a forced choice: privacy, settings, residency,
    availability and the caller's preference all return before step 4.
    """

    p_local: float | None = None
    threshold: float = 0.5
    router: str | None = None
    explore: float = 0.0
    draw: float = 1.0
    explorable: bool = False


@dataclass(frozen=True)
class RoutingLog:
    """How the side was chosen, for the request record (no text): forced or free, and with what probability."""

    side: Target | None
    forced: bool
    propensity: float  # probability that this policy picks ``side`` for this request (1.0 when forced)
    explored: bool = False
    router: str | None = None  # the learned router version that scored the free step, None: the rules
    score: float | None = None  # p_local of that router, or the complexity score under the rules
    # Filled in by the engine (routing/learned.py with_inputs), kept only for analytics opt-in users:
    vector: tuple[float, ...] = ()
    text_logit: float = 0.0
    rephrase: bool = False  # the latest ask restates the previous one (the previous answer did not help)


@dataclass(frozen=True)
class Decision:
    target: Target | None  # None: nothing may answer (e.g. sensitive and local down)
    reasons: tuple[str, ...]
    cloud_allowed: bool  # may the request's content reach the cloud at all (fallback direction local -> cloud)
    complexity: float
    on_device: bool = False
    device_reasons: tuple[str, ...] = field(default_factory=tuple)
    error_code: str | None = None
    redact: bool = False  # personal data must be redacted before the cloud sees this request
    region: str | None = None  # residency region of the cloud endpoint this decision may use
    routing: RoutingLog | None = None


def _cloud_block_reason(state: LiveState) -> str:
    if not state.cloud_configured:
        if state.cloud_region is not None:
            return f"no cloud endpoint in region {state.cloud_region} (user setting: region)"
        return "no cloud configured"
    if state.cloud_breaker_open:
        return "cloud circuit breaker open"
    return "cloud budget exhausted"


def _device(device: Device | None, target: Target | None, privacy: PrivacyLevel) -> tuple[bool, tuple[str, ...]]:
    if device is None:
        return False, ("no device profile",)
    if not (device.capabilities & ON_DEVICE_CAPABILITIES):
        return False, ("device has no local-LLM capability",)
    if device.battery_level is not None and device.battery_level < LOW_BATTERY:
        return False, (f"battery {device.battery_level:.0f}% < {LOW_BATTERY}%: spare the device",)
    if target == "cloud" and privacy == "public":
        return False, ("request is better served by the cloud model",)
    return True, ("device can run the local model",)


def special_categories_may_leave(user: PrivacySettings | None) -> bool:
    """Special-category topics (GDPR art. 9) may reach the cloud only in ``cloud_allowed`` mode with the explicit
    opt-in; ``hybrid`` keeps them local whatever the opt-in says."""
    return (
        user is not None
        and user.cloud_refusal is None
        and user.processing_mode == "cloud_allowed"
        and user.special_category_cloud_opt_in
    )


def decide(
    features: RequestFeatures,
    hints: Hints,
    state: LiveState,
    config: PolicyConfig,
    device: Device | None = None,
    user: PrivacySettings | None = None,
    free: FreeStep | None = None,
) -> Decision:
    """``user``: the requesting user's privacy settings (None: anonymous, the defaults); ``free``: the learned
    router's score and the exploration draw for step 4 (None: the complexity score, no exploration)."""
    reasons: list[str] = []
    complexity = features.complexity
    free = free or FreeStep()
    log = RoutingLog(None, forced=True, propensity=1.0)

    redact = hints.privacy_level == "private"

    def done(target: Target | None, cloud_allowed: bool, error: str | None = None) -> Decision:
        on_device, device_reasons = _device(device, target, hints.privacy_level)
        routing = replace(log, side=target)
        return Decision(
            target,
            tuple(reasons),
            cloud_allowed,
            complexity,
            on_device,
            device_reasons,
            error,
            redact and cloud_allowed,
            state.cloud_region if cloud_allowed or target == "cloud" else None,
            routing,
        )

    def local_or_fail(cloud_allowed: bool) -> Decision:
        if state.local_available:
            return done("local", cloud_allowed)
        reasons.append(state.local_unavailable_reason)
        return done(None, cloud_allowed, "local_unavailable")

    # 0. The user's settings: nothing of theirs reaches the cloud when they said so.
    refusal = user.cloud_refusal if user is not None else None
    if refusal is not None:
        reasons.append(refusal)
        return local_or_fail(cloud_allowed=False)

    # 1. Privacy: sensitive content stays on our side; private content leaves only redacted (``redact``).
    if hints.privacy_level == "sensitive":
        reasons.append("privacy level sensitive: local only")
        return local_or_fail(cloud_allowed=False)
    # From here on the request may use the cloud: as it is when public, redacted when private.
    cloud_words = "cloud with personal data redacted" if redact else "cloud"

    # 2. Availability: a side that cannot answer is not a choice.
    if not state.cloud_usable:
        reasons.append(f"{_cloud_block_reason(state)}: local")
        return local_or_fail(cloud_allowed=False)
    if not state.local_available:
        reasons.append(f"{state.local_unavailable_reason}: {cloud_words}")
        return done("cloud", True)
    if state.local_queue_full:
        reasons.append(f"local queue full: spill over to the {cloud_words}")
        return done("cloud", True)

    budget = hints.max_latency_ms
    local_fits = budget is None or state.local_ttft_ms <= budget
    cloud_fits = budget is None or state.cloud_ttft_ms <= budget

    # 3. The caller's preference, kept unless it breaks their own latency budget.
    if hints.prefer_local:
        if not local_fits and cloud_fits:
            reasons.append(
                f"prefers local, but local needs ~{state.local_ttft_ms:.0f} ms > budget {budget:.0f} ms "
                f"and cloud ~{state.cloud_ttft_ms:.0f} ms fits: {cloud_words}"
            )
            return done("cloud", True)
        reasons.append("caller prefers local")
        return done("local", True)

    # 4. The free choice: the learned router's score, or the complexity score, against cost.
    # Exploration only where a wrong side costs no privacy: public requests of users who opted in to analytics (the
    # engine adds: no special-category data). Checked here as well, so a careless caller cannot widen it.
    explorable = free.explorable and hints.privacy_level == "public" and user is not None and user.analytics_opt_in
    target, log = _free_choice(features, config, replace(free, explorable=explorable), reasons, cloud_words)
    if target == "local" and not local_fits and cloud_fits:
        reasons.append(f"local ~{state.local_ttft_ms:.0f} ms misses the {budget:.0f} ms budget: {cloud_words}")
        target = "cloud"
        log = RoutingLog(None, forced=True, propensity=1.0, router=log.router, score=log.score)
    elif target == "cloud" and not cloud_fits and local_fits:
        reasons.append(f"cloud ~{state.cloud_ttft_ms:.0f} ms misses the {budget:.0f} ms budget: local")
        target = "local"
        log = RoutingLog(None, forced=True, propensity=1.0, router=log.router, score=log.score)
    return done(target, True)


def _free_choice(
    features: RequestFeatures, config: PolicyConfig, free: FreeStep, reasons: list[str], cloud_words: str
) -> tuple[Target, RoutingLog]:
    if free.p_local is not None:
        score = free.p_local
        target: Target = "cloud" if score < free.threshold else "local"
        side = "local" if target == "local" else cloud_words
        relation = "<" if target == "cloud" else ">="
        reasons.append(
            f"router {free.router}: local answer good with p={score:.2f} {relation} {free.threshold:.2f}: {side}"
        )
    else:
        score = features.complexity
        explained = features.explain()
        if score >= config.complexity_threshold:
            reasons.append(
                f"complex request ({score:.2f} >= {config.complexity_threshold:.2f}: {explained}): {cloud_words}"
            )
            target = "cloud"
        else:
            reasons.append(f"simple request ({score:.2f} < {config.complexity_threshold:.2f}: {explained}): local")
            target = "local"
    rate = min(max(free.explore, 0.0), 0.5) if free.explorable else 0.0
    if rate and free.draw < rate:
        target = "local" if target == "cloud" else "cloud"
        reasons.append(f"exploration ({rate:.2f} of free choices take the other side): {target}")
        return target, RoutingLog(None, forced=False, propensity=rate, explored=True, router=free.router, score=score)
    return target, RoutingLog(None, forced=False, propensity=1.0 - rate, router=free.router, score=score)
