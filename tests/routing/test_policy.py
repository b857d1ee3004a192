"""Every policy rule, exercised through the pure decide() function."""

from __future__ import annotations

import itertools

import pytest

from upcoach.llm.base import ChatMessage
from upcoach.routing.features import RequestFeatures, extract
from upcoach.routing.policy import Decision, Device, Hints, LiveState, PolicyConfig, decide

CONFIG = PolicyConfig(complexity_threshold=0.5)
SIMPLE = extract((ChatMessage("user", "How do I drink more water?"),))
COMPLEX = extract((ChatMessage("user", "Compare GROW, OKR and SMART frameworks in detail and build a 12-week plan "
                               "with weekly milestones for me."),))  # fmt: skip
HEALTHY = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=200, cloud_ttft_ms=700)


def run(
    features: RequestFeatures, state: LiveState = HEALTHY, device: Device | None = None, **hints: object
) -> Decision:
    return decide(features, Hints(**hints), state, CONFIG, device)  # type: ignore[arg-type]


def test_sensitive_is_local_even_when_complex_and_cloud_preferred() -> None:
    decision = run(COMPLEX, privacy_level="sensitive", max_latency_ms=10)
    assert decision.target == "local" and not decision.cloud_allowed
    assert "sensitive" in decision.reasons[0]


def test_sensitive_with_local_down_fails_instead_of_using_cloud() -> None:
    state = LiveState(local_available=False, cloud_configured=True, local_unavailable_reason="model not loaded")
    decision = run(COMPLEX, state, privacy_level="sensitive")
    assert decision.target is None and decision.error_code == "local_unavailable"
    assert not decision.cloud_allowed


def test_private_reaches_the_cloud_only_redacted() -> None:
    # The old policy had a "private: kept local" mode that never shipped (create_app always redacted).
    decision = run(COMPLEX, privacy_level="private")
    assert decision.target == "cloud" and decision.redact


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (LiveState(local_available=True, cloud_configured=False), "no cloud configured"),
        (LiveState(local_available=True, cloud_configured=True, cloud_breaker_open=True), "breaker open"),
        (LiveState(local_available=True, cloud_configured=True, cloud_over_budget=True), "budget"),
    ],
)
def test_unusable_cloud_means_local(state: LiveState, reason: str) -> None:
    decision = run(COMPLEX, state, privacy_level="public")
    assert decision.target == "local" and reason in decision.reasons[0]


def test_public_complex_goes_to_cloud_and_simple_stays_local() -> None:
    assert run(COMPLEX, privacy_level="public").target == "cloud"
    simple = run(SIMPLE, privacy_level="public")
    assert simple.target == "local" and "simple request" in simple.reasons[0]


def test_prefer_local_kept_unless_budget_missed_and_cloud_fits() -> None:
    assert run(COMPLEX, privacy_level="public", prefer_local=True).target == "local"
    slow_local = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=900, cloud_ttft_ms=300)
    assert run(SIMPLE, slow_local, privacy_level="public", prefer_local=True, max_latency_ms=500).target == "cloud"
    both_slow = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=900, cloud_ttft_ms=800)
    assert run(SIMPLE, both_slow, privacy_level="public", prefer_local=True, max_latency_ms=500).target == "local"


def test_latency_budget_switches_side_when_only_the_other_fits() -> None:
    slow_cloud = LiveState(local_available=True, cloud_configured=True, local_ttft_ms=150, cloud_ttft_ms=900)
    decision = run(COMPLEX, slow_cloud, privacy_level="public", max_latency_ms=300)
    assert decision.target == "local" and "misses" in decision.reasons[-1]


def test_local_queue_full_spills_public_and_redacted_private_to_cloud_but_never_sensitive() -> None:
    full = LiveState(local_available=True, local_queue_full=True, cloud_configured=True)
    assert run(SIMPLE, full, privacy_level="public").target == "cloud"
    assert "queue full" in run(SIMPLE, full, privacy_level="public").reasons[0]
    private = run(SIMPLE, full, privacy_level="private")
    assert private.target == "cloud" and private.redact
    assert run(SIMPLE, full, privacy_level="sensitive").target == "local"


def test_local_down_public_goes_to_cloud() -> None:
    down = LiveState(local_available=False, cloud_configured=True, local_unavailable_reason="model not loaded")
    assert run(SIMPLE, down, privacy_level="public").target == "cloud"


def test_device_rules() -> None:
    phone = Device("Pixel 8", frozenset({"local-llm"}), battery_level=80)
    assert run(SIMPLE, device=phone, privacy_level="private").on_device
    low = Device("Pixel 8", frozenset({"local-llm"}), battery_level=12)
    decision = run(SIMPLE, device=low, privacy_level="private")
    assert not decision.on_device and "battery" in decision.device_reasons[0]
    no_llm = Device("old phone", frozenset({"camera"}), battery_level=90)
    assert not run(SIMPLE, device=no_llm, privacy_level="private").on_device
    assert not run(COMPLEX, device=phone, privacy_level="public").on_device


def test_every_combination_gives_a_reasoned_decision_and_private_never_cloud_unredacted() -> None:
    for level, prefer, budget, local_ok, full, cloud, breaker, features in itertools.product(
        ("public", "private", "sensitive"), (False, True), (None, 50.0, 5000.0), (True, False), (False, True),
        (True, False), (False, True), (SIMPLE, COMPLEX),
    ):  # fmt: skip
        state = LiveState(local_ok, full, 200, cloud, breaker, False, 700)
        decision = run(features, state, privacy_level=level, prefer_local=prefer, max_latency_ms=budget)
        assert decision.reasons
        if level == "sensitive":
            assert decision.target in ("local", None) and not decision.cloud_allowed
        if level == "private" and (decision.cloud_allowed or decision.target == "cloud"):
            assert decision.redact
        if decision.target == "cloud":
            assert cloud and not breaker
        if decision.target is None:
            assert not local_ok and decision.error_code == "local_unavailable"


def test_private_complex_goes_to_cloud_only_redacted() -> None:
    decision = decide(COMPLEX, Hints("private"), HEALTHY, CONFIG)
    assert decision.target == "cloud" and decision.redact and decision.cloud_allowed
    assert "redacted" in decision.reasons[-1]
    simple = decide(SIMPLE, Hints("private"), HEALTHY, CONFIG)
    assert simple.target == "local" and simple.redact  # a fallback to the cloud would be redacted too


def test_public_is_never_marked_for_redaction_and_sensitive_never_leaves() -> None:
    assert not decide(COMPLEX, Hints("public"), HEALTHY, CONFIG).redact
    sensitive = decide(COMPLEX, Hints("sensitive"), HEALTHY, CONFIG)
    assert sensitive.target == "local" and not sensitive.cloud_allowed and not sensitive.redact


def test_with_redaction_every_cloud_bound_private_decision_is_redacted() -> None:
    for prefer, budget, local_ok, full, cloud, features in itertools.product(
        (False, True), (None, 50.0), (True, False), (False, True), (True, False), (SIMPLE, COMPLEX)
    ):
        state = LiveState(local_ok, full, 200, cloud, False, False, 700)
        decision = decide(features, Hints("private", prefer, budget), state, CONFIG)
        if decision.cloud_allowed or decision.target == "cloud":
            assert decision.redact
