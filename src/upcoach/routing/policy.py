"""The routing policy: a pure function of (request features, hints, device, live backend state) -> decision.

No I/O, no clock, no randomness: every rule is testable exhaustively and every decision carries the
human-readable reasons the dashboard shows. Rule order is the privacy order: privacy first, then availability,
then the caller's latency preference, then complexity vs cost. The user's own privacy settings come before
everything: ``local_only`` and ``do_not_share`` keep every request off the cloud, including fallback and
spill-over (a 429 or 503 is better than a leak). A settings lookup that failed never reaches the policy: the
engine refuses such a request (503 ``security_check_failed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
) -> Decision:
    """``user``: the requesting user's privacy settings (None: anonymous, the defaults)."""
    reasons: list[str] = []
    complexity = features.complexity

    redact = hints.privacy_level == "private"

    def done(target: Target | None, cloud_allowed: bool, error: str | None = None) -> Decision:
        on_device, device_reasons = _device(device, target, hints.privacy_level)
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

    # 4. Complexity against cost: simple requests are free locally, complex ones get the bigger model.
    explained = features.explain()
    if complexity >= config.complexity_threshold:
        reasons.append(
            f"complex request ({complexity:.2f} >= {config.complexity_threshold:.2f}: {explained}): {cloud_words}"
        )
        target: Target = "cloud"
    else:
        reasons.append(f"simple request ({complexity:.2f} < {config.complexity_threshold:.2f}: {explained}): local")
        target = "local"
    if target == "local" and not local_fits and cloud_fits:
        reasons.append(f"local ~{state.local_ttft_ms:.0f} ms misses the {budget:.0f} ms budget: {cloud_words}")
        target = "cloud"
    elif target == "cloud" and not cloud_fits and local_fits:
        reasons.append(f"cloud ~{state.cloud_ttft_ms:.0f} ms misses the {budget:.0f} ms budget: local")
        target = "local"
    return done(target, True)
