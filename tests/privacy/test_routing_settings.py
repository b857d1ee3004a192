"""The routing policy obeys the user's privacy settings: pure decide() cases, no I/O."""

from __future__ import annotations

import itertools

import pytest

from upcoach.llm.base import ChatMessage
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.features import extract
from upcoach.routing.policy import Decision, Hints, LiveState, PolicyConfig, decide, special_categories_may_leave

CONFIG = PolicyConfig(complexity_threshold=0.5)
COMPLEX = extract((ChatMessage("user", "Compare GROW, OKR and SMART frameworks in detail and build a 12-week plan "
                               "with weekly milestones for me."),))  # fmt: skip
HEALTHY = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=200, cloud_ttft_ms=700)
QUEUE_FULL = LiveState(local_available=True, local_queue_full=True, cloud_configured=True)
LOCAL_DOWN = LiveState(local_available=False, cloud_configured=True, local_unavailable_reason="model not loaded")
SLOW_LOCAL = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=9000, cloud_ttft_ms=300)
NO_CLOUD = PrivacySettings(processing_mode="local_only")
DO_NOT_SHARE = PrivacySettings(processing_mode="cloud_allowed", do_not_share=True)


def run(user: PrivacySettings | None, state: LiveState = HEALTHY, **hints: object) -> Decision:
    return decide(COMPLEX, Hints(**hints), state, CONFIG, None, user)  # type: ignore[arg-type]


def test_without_settings_a_complex_public_request_goes_to_the_cloud() -> None:
    # The baseline the cases below overturn.
    assert run(None, privacy_level="public").target == "cloud"
    assert run(PrivacySettings(), privacy_level="public").target == "cloud"


@pytest.mark.parametrize(("user", "reason"), [(NO_CLOUD, "user setting: local_only"),
                                              (DO_NOT_SHARE, "user setting: do_not_share")])  # fmt: skip
@pytest.mark.parametrize(
    ("state", "hints"),
    [
        (HEALTHY, {"privacy_level": "public", "prefer_local": False}),
        (HEALTHY, {"privacy_level": "private"}),
        (SLOW_LOCAL, {"privacy_level": "public", "max_latency_ms": 1000}),
        (SLOW_LOCAL, {"privacy_level": "public", "prefer_local": True, "max_latency_ms": 1000}),
        (QUEUE_FULL, {"privacy_level": "public"}),
    ],
)
def test_local_only_and_do_not_share_never_choose_or_allow_the_cloud(
    user: PrivacySettings, reason: str, state: LiveState, hints: dict[str, object]
) -> None:
    decision = run(user, state, **hints)
    assert decision.target == "local"
    assert not decision.cloud_allowed and not decision.redact  # no fallback or spill-over to the cloud either
    assert decision.reasons[0].startswith(reason)


@pytest.mark.parametrize("user", [NO_CLOUD, DO_NOT_SHARE])
def test_local_down_is_an_error_not_the_cloud(user: PrivacySettings) -> None:
    decision = run(user, LOCAL_DOWN, privacy_level="public")
    assert decision.target is None and decision.error_code == "local_unavailable" and not decision.cloud_allowed


def test_cloud_allowed_still_redacts_private_requests() -> None:
    decision = run(PrivacySettings(processing_mode="cloud_allowed"), privacy_level="private")
    assert decision.target == "cloud" and decision.redact
    assert run(PrivacySettings(processing_mode="cloud_allowed"), privacy_level="sensitive").target == "local"


def test_special_categories_leave_only_with_cloud_allowed_and_the_opt_in() -> None:
    cases = {
        (mode, opt_in, dns): special_categories_may_leave(PrivacySettings(mode, opt_in, do_not_share=dns))  # type: ignore[arg-type]
        for mode, opt_in, dns in itertools.product(
            ("local_only", "hybrid", "cloud_allowed"), (False, True), (False, True)
        )
    }
    assert [key for key, allowed in cases.items() if allowed] == [("cloud_allowed", True, False)]
    assert not special_categories_may_leave(None)


def test_region_without_endpoint_is_named_and_local() -> None:
    state = LiveState(local_available=True, cloud_configured=False, cloud_region="ap")
    decision = run(PrivacySettings(region="ap"), state, privacy_level="public")
    assert decision.target == "local" and not decision.cloud_allowed and decision.region is None
    assert "no cloud endpoint in region ap" in decision.reasons[0]
    eu = LiveState(local_available=True, cloud_configured=True, cloud_region="eu")
    assert run(PrivacySettings(region="eu"), eu, privacy_level="public").region == "eu"
