"""The learned router (issue 20): numpy scorer = scikit-learn, the policy order it cannot change, exploration only
where it is allowed, signed versions, off-policy estimates against the simulator's hidden truth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upcoach.config import Settings
from upcoach.llm.base import ChatMessage
from upcoach.privacy.settings import PrivacySettings
from upcoach.router_cli import DEFAULT_LABELLED, labelled_rows, load_labelled
from upcoach.routing.features import extract
from upcoach.routing.learned import LearnedRouter, dense, prepare, record_fields, rephrases, with_inputs
from upcoach.routing.learned_eval import evaluate, rules_policy
from upcoach.routing.learned_sim import HEALTHY, Ask, free_rows, simulate
from upcoach.routing.learned_store import RouterStore, RouterTampered, load_active
from upcoach.routing.learned_train import train
from upcoach.routing.policy import FreeStep, Hints, LiveState, PolicyConfig, decide

ROOT = Path(__file__).resolve().parents[2]
LABELLED = ROOT / DEFAULT_LABELLED


@pytest.fixture(scope="module")
def dev_rows() -> list:
    return labelled_rows(load_labelled(LABELLED, "dev"))


@pytest.fixture(scope="module")
def payload(dev_rows: list) -> dict:
    return train(dev_rows, source="labelled dev", version="t-labelled")


@pytest.fixture(scope="module")
def router(payload: dict) -> LearnedRouter:
    return LearnedRouter(payload)


def _payload_saying(p_local: float, version: str = "fixed") -> dict:
    """A router version whose score is ``p_local`` for every request (only its intercept is set)."""
    from upcoach.routing.learned import FORMAT, dense_names

    n = len(dense_names())
    logit = float(np.log(p_local / (1 - p_local))) if 0 < p_local < 1 else (40.0 if p_local >= 1 else -40.0)
    return {"format": FORMAT, "version": version, "dense_names": list(dense_names()), "buckets": 16,
            "dense_coef": [0.0] * n, "text_coef": [], "intercept": logit, "threshold": 0.5}  # fmt: skip


def _router_saying(p_local: float, version: str = "fixed") -> LearnedRouter:
    return LearnedRouter(_payload_saying(p_local, version))


def test_numpy_scorer_reproduces_scikit_learn(dev_rows: list, payload: dict, router: LearnedRouter) -> None:
    from scipy.sparse import hstack
    from sklearn.linear_model import LogisticRegression

    from upcoach.routing.learned import dense_names
    from upcoach.routing.learned_train import BUCKETS, EXCLUDE, C, _sparse

    keep = np.array([0.0 if n.startswith(EXCLUDE) else 1.0 for n in dense_names()])
    x = hstack([np.stack([r.vector for r in dev_rows]) * keep, _sparse([r.text for r in dev_rows], BUCKETS)]).tocsr()
    y = np.array([int(r.reward) for r in dev_rows])
    model = LogisticRegression(C=C, max_iter=2000, fit_intercept=False).fit(x, y)
    expected = model.predict_proba(x[:40])[:, 1]
    got = np.array([router.score(r.vector * keep, r.text).p_local for r in dev_rows[:40]])
    assert np.allclose(got, expected, atol=1e-4)
    # The excluded entries (the rules' outputs) carry no weight, so the masking above changes nothing.
    assert np.allclose(got, [router.score(r.vector, r.text).p_local for r in dev_rows[:40]])


def test_learned_router_meets_the_goal_on_held_out_requests(router: LearnedRouter) -> None:
    held = labelled_rows(load_labelled(LABELLED, "held"))
    simple = [router.score(r.vector, r.text).p_local >= router.threshold for r in held if r.reward == 1]
    hard = [router.score(r.vector, r.text).p_local < router.threshold for r in held if r.reward == 0]
    assert np.mean(simple) >= 0.9 and np.mean(hard) >= 0.9, (np.mean(simple), np.mean(hard))


@settings(max_examples=300, deadline=None)
@given(
    p_local=st.floats(0.0, 1.0),
    threshold=st.floats(0.0, 1.0),
    explore=st.floats(0.0, 1.0),
    draw=st.floats(0.0, 0.999),
    explorable=st.booleans(),
    level=st.sampled_from(["public", "private", "sensitive"]),
    mode=st.sampled_from(["local_only", "hybrid", "cloud_allowed"]),
    do_not_share=st.booleans(),
    analytics=st.booleans(),
)
def test_no_router_score_or_draw_sends_sensitive_or_local_only_to_the_cloud(
    p_local: float, threshold: float, explore: float, draw: float, explorable: bool, level: str, mode: str,
    do_not_share: bool, analytics: bool,
) -> None:  # fmt: skip
    features = extract((ChatMessage("user", "Write a 12-week marathon plan with a table per week."),))
    user = PrivacySettings(processing_mode=mode, do_not_share=do_not_share, analytics_opt_in=analytics)  # type: ignore[arg-type]
    free = FreeStep(p_local, threshold, "any", explore, draw, explorable)
    decision = decide(features, Hints(level), HEALTHY, PolicyConfig(), user=user, free=free)  # type: ignore[arg-type]
    assert decision.routing is not None
    if level == "sensitive" or mode == "local_only" or do_not_share:
        assert decision.target == "local" and not decision.cloud_allowed and decision.routing.forced
    if decision.routing.explored:
        assert level == "public" and analytics and explorable and not decision.routing.forced
        assert decision.routing.propensity == pytest.approx(min(explore, 0.5))


async def test_engine_keeps_special_category_local_whatever_the_router_says(tmp_path: Path) -> None:
    """The shipped engine (routing/factory.py), a router that always says "cloud" and the most exploration allowed:
    a request about a diagnosis stays local, and a user with local_only stays local."""
    from benchmarks.routing import _HealthyLocal

    from upcoach.llm.base import GenerationParams
    from upcoach.observability.audit import AuditLog, audit_key_from_settings
    from upcoach.observability.metrics import Metrics
    from upcoach.routing.breaker import MemoryBreakerStore
    from upcoach.routing.engine import HybridRequest
    from upcoach.routing.factory import build_hybrid_engine
    from upcoach.storage.audit import AuditRepository
    from upcoach.storage.database import Database

    settings = Settings(data_dir=tmp_path, load_model=False, redis_url=None, cloud_base_url="http://127.0.0.1:9/v1",
                        cloud_api_key="unused", cloud_model="cloud", router_explore=0.5)  # fmt: skip
    store = RouterStore.from_settings(settings)
    store.save(_payload_saying(0.0, "always-cloud"))
    store.use("always-cloud")
    db = Database(settings.effective_database_url)
    await db.migrate()
    users = {"u-local": PrivacySettings(processing_mode="local_only", analytics_opt_in=True),
             "u-open": PrivacySettings(processing_mode="cloud_allowed", analytics_opt_in=True)}  # fmt: skip

    async def privacy(user_id: str) -> PrivacySettings:
        return users[user_id]

    async def discard(outcome: object) -> None:
        return None

    key = audit_key_from_settings(settings)
    assert key is not None
    engine = build_hybrid_engine(settings, local=[_HealthyLocal()], metrics=Metrics(), record=discard,
                                 audit=AuditLog(AuditRepository(db), key), privacy=privacy,
                                 breaker_store=MemoryBreakerStore())  # fmt: skip
    assert engine.policy.router is not None and engine.policy.router.version == "always-cloud"
    try:
        diagnosis = "I was diagnosed with bipolar disorder last year and take lithium. How do I plan my week?"
        plan = "Write an 8-session curriculum on time management with objectives, exercises and homework."
        for text, user, level, expected in [
            (diagnosis, "u-open", "public", "local"),
            (plan, "u-local", "public", "local"),
            (plan, "u-open", "sensitive", "local"),
            (plan, "u-open", "public", None),  # free: the router's "cloud", or exploration's "local"
        ]:
            for i in range(12):  # exploration draws differ per request
                request = HybridRequest((ChatMessage("user", text),), GenerationParams(), Hints(level),
                                        f"r-{i}", user_id=user)  # type: ignore[arg-type]  # fmt: skip
                decision, *_ = await engine.route(request)
                assert decision.routing is not None
                if expected is not None:
                    assert decision.target == expected and decision.routing.forced, (text, user, level)
                    assert not decision.routing.explored
                else:
                    assert decision.routing.router == "always-cloud" and not decision.routing.forced
                    assert decision.target == ("local" if decision.routing.explored else "cloud")
                    assert len(decision.routing.vector) == len(_dense_names())  # opted in: the vector is kept
    finally:
        await engine.aclose()
        await db.dispose()


def _dense_names() -> tuple[str, ...]:
    from upcoach.routing.learned import dense_names

    return dense_names()


def test_exploration_never_touches_private_or_non_consenting_requests() -> None:
    pool = load_labelled(LABELLED, "held")
    log = simulate(pool, 600, explore=0.5, seed=3)
    explored = [r for r in log if r.log.explored]
    assert len(explored) > 50  # it does explore where allowed
    assert all(r.user.privacy_level == "public" and r.user.analytics_opt_in for r in explored)
    assert all(r.log.propensity == 0.5 for r in explored)
    assert all(r.log.forced for r in log if r.user.privacy_level == "sensitive")
    assert not any(r.log.side == "cloud" for r in log if r.user.privacy_level == "sensitive")


def test_record_keeps_numbers_never_text_and_the_vector_only_with_consent() -> None:
    text = "Write a detailed 6-week plan to prepare for a job interview at Acme, with a table per week."
    messages = (ChatMessage("user", "plan for my interview at Acme please"), ChatMessage("assistant", "..."),
                ChatMessage("user", text))  # fmt: skip
    features = extract(messages)
    prepared = prepare(_router_saying(0.2), features, text, explore=0.05, draw=0.9, explorable=True)
    decision = decide(features, Hints("public"), HEALTHY, PolicyConfig(), user=PrivacySettings(analytics_opt_in=True),
                      free=prepared.free)  # fmt: skip
    assert decision.routing is not None and decision.target == "cloud"
    kept = record_fields(with_inputs(decision.routing, prepared, messages, keep_vector=True))
    dropped = record_fields(with_inputs(decision.routing, prepared, messages, keep_vector=False))
    assert kept is not None and dropped is not None
    assert kept["propensity"] == pytest.approx(0.95) and kept["forced"] is False and len(kept["vector"]) > 10
    assert "vector" not in dropped and "text_logit" not in dropped
    serialized = json.dumps(kept).lower()
    assert "acme" not in serialized and "interview" not in serialized
    assert rephrases("How do I stop procrastinating on my thesis?", "how can I stop procrastinating on the thesis")
    assert not rephrases("How do I stop procrastinating on my thesis?", "Thanks! And what about sleep?")


def test_versions_are_signed_and_a_tampered_one_is_refused(tmp_path: Path, payload: dict) -> None:
    settings = Settings(data_dir=tmp_path, load_model=False)
    store = RouterStore.from_settings(settings)
    manifest = store.save(payload)
    assert store.signer.verify(manifest)
    store.use(payload["version"])
    assert load_active(settings) is not None
    path = tmp_path / "routers" / f"{payload['version']}.json"
    tampered = json.loads(path.read_text())
    tampered["threshold"] = 0.99
    path.write_text(json.dumps(tampered, sort_keys=True, separators=(",", ":")))
    with pytest.raises(RouterTampered):
        store.load(payload["version"])
    assert load_active(settings) is None  # the engine then routes by the rules
    with pytest.raises(FileExistsError):
        store.save(payload)


def test_off_policy_estimates_cover_the_simulators_hidden_truth() -> None:
    """IPS and DR from an exploring log (ratings only) against the exact expected reward from hidden difficulty."""
    pool = load_labelled(LABELLED, "held")
    log = simulate(pool, 1500, explore=0.3, seed=5)
    rows = free_rows(log)
    policy = rules_policy()
    explorable = [r for r in log if not r.log.forced and r.user.analytics_opt_in and 0 < r.log.propensity < 1]
    truth = np.mean([r.expected_reward("local" if policy(r.logged) else "cloud") for r in explorable])
    result = evaluate("rules", policy, rows, rounds=300)
    assert result.rows == len(explorable)
    for estimate in (result.ips, result.dr):
        assert estimate.low <= truth <= estimate.high, (estimate, truth)
    always_local = evaluate("all local", lambda row: True, rows, rounds=300)
    assert always_local.local_share.value == 1.0 and always_local.dr.value < result.dr.value


def test_policy_free_step_uses_the_router_and_logs_the_rules_score_without_it() -> None:
    features = extract((ChatMessage("user", "Any tips for falling asleep faster?"),))
    user = PrivacySettings(analytics_opt_in=True)
    rules = decide(features, Hints("public"), HEALTHY, PolicyConfig(), user=user)
    assert rules.target == "local" and rules.routing is not None and rules.routing.router is None
    assert rules.routing.score == features.complexity and rules.routing.propensity == 1.0
    learned = decide(features, Hints("public"), HEALTHY, PolicyConfig(), user=user,
                     free=FreeStep(0.1, 0.5, "v1", 0.0, 0.5, True))  # fmt: skip
    assert learned.target == "cloud" and learned.routing is not None and learned.routing.router == "v1"
    down = replace(HEALTHY, cloud_breaker_open=True)
    forced = decide(features, Hints("public"), down, PolicyConfig(), user=user, free=FreeStep(0.1, 0.5, "v1", 0.5,
                    0.0, True))  # fmt: skip
    assert forced.target == "local" and forced.routing is not None and forced.routing.forced
    assert isinstance(down, LiveState) and dense(features).shape == (len(_dense_names()),)
    assert Ask("x", True).lang == "en"
