"""Version A/B: sticky assignment close to the share, per-version latency and ratings."""

from __future__ import annotations

import pytest

from upcoach.errors import InvalidRequest, NotFound
from upcoach.llm.base import ChatMessage, ChatRequest, Completion, Usage
from upcoach.modelstore import versions_ab
from upcoach.modelstore.versions_ab import VersionExperiment, bucket


def request(user: str | None, request_id: str = "r") -> ChatRequest:
    return ChatRequest((ChatMessage("user", "hi"),), request_id=request_id, user_id=user)


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_assignment_is_close_to_the_share(share: float) -> None:
    experiment = VersionExperiment("m@1", "m@2", share, salt="fixed")
    users = [f"user-{i}" for i in range(5000)]
    candidate = sum(experiment.arm(request(u)) == "candidate" for u in users)
    # 5000 Bernoulli draws: 4 standard deviations of the share is < 0.03.
    assert abs(candidate / len(users) - share) < 0.03


def test_assignment_is_sticky_per_user_and_reshuffled_by_a_new_experiment() -> None:
    first = VersionExperiment("m@1", "m@2", 0.5, salt="one")
    arms = {u: first.arm(request(u, f"req-{i}")) for i, u in enumerate(f"u{i}" for i in range(200))}
    for repeat in range(3):
        assert all(first.arm(request(u, f"other-{repeat}")) == arm for u, arm in arms.items())
    second = VersionExperiment("m@1", "m@2", 0.5, salt="two")
    changed = sum(second.arm(request(u)) != arm for u, arm in arms.items())
    assert 50 < changed < 150  # independent salts: about half the users move


def test_requests_without_a_user_fall_back_to_the_request_id() -> None:
    experiment = VersionExperiment("m@1", "m@2", 0.5, salt="s")
    arms = {experiment.arm(request(None, f"req-{i}")) for i in range(100)}
    assert arms == {"active", "candidate"}
    assert bucket("s", "x") == bucket("s", "x") != bucket("t", "x")


def completion(ttft: float, total: float, tokens: int = 5) -> Completion:
    return Completion("hi", "stop", Usage(3, tokens), "m", first_token_ms=ttft, total_ms=total)


def test_latency_and_ratings_per_version() -> None:
    experiment = VersionExperiment("m@1", "m@2", 0.5, salt="s")
    experiment.observe("m@1", request("a", "r1"), completion(100, 400))
    experiment.observe("m@1", request("a", "r2"), completion(300, 600))
    experiment.observe("m@2", request("b", "r3"), completion(50, 200))
    experiment.observe("other@9", request("c", "r4"), completion(1, 1))  # not in the test: ignored
    assert experiment.rate(5, request_id="r3", user_id="b") == "m@2"
    assert experiment.rate(2, request_id="r1", user_id="a") == "m@1"
    assert experiment.rate(4, request_id="r2", user_id="a") == "m@1"
    view = experiment.to_json()
    active, candidate = view["versions"]["m@1"], view["versions"]["m@2"]  # type: ignore[index]
    assert active["requests"] == 2 and candidate["requests"] == 1
    assert active["firstTokenMs"]["mean"] == 200 and active["totalMs"]["p50"] == 600
    assert candidate["firstTokenMs"]["mean"] == 50
    assert active["ratings"] == {"count": 2, "mean": 3.0, "histogram": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}}
    assert candidate["ratings"]["count"] == 1 and candidate["ratings"]["mean"] == 5.0


def test_ratings_cannot_be_stuffed() -> None:
    """One rating per answered request, by the user it was answered for; a new rating replaces the old one."""
    experiment = VersionExperiment("m@1", "m@2", 0.5, salt="s")
    experiment.observe("m@2", request("b", "r3"), completion(50, 200))
    for rating in (1, 1, 1, 5):
        assert experiment.rate(rating, request_id="r3", user_id="b") == "m@2"
    ratings = experiment.to_json()["versions"]["m@2"]["ratings"]  # type: ignore[index]
    assert ratings["count"] == 1 and ratings["mean"] == 5.0
    with pytest.raises(NotFound):  # someone else's answer
        experiment.rate(1, request_id="r3", user_id="mallory")
    with pytest.raises(NotFound):  # an answer this experiment never gave
        experiment.rate(1, request_id="never-seen", user_id="b")
    assert experiment.to_json()["versions"]["m@2"]["ratings"]["count"] == 1  # type: ignore[index]


def test_a_forgotten_requests_rating_stays_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions_ab, "REQUEST_MEMORY", 2)
    experiment = VersionExperiment("m@1", "m@2", 0.0, salt="s")
    experiment.observe("m@1", request("a", "r1"), completion(1, 1))
    experiment.rate(4, request_id="r1", user_id="a")
    for i in range(2, 5):
        experiment.observe("m@1", request("a", f"r{i}"), completion(1, 1))
    with pytest.raises(NotFound):  # forgotten: its rating is final
        experiment.rate(1, request_id="r1", user_id="a")
    experiment.rate(2, request_id="r4", user_id="a")
    ratings = experiment.to_json()["versions"]["m@1"]["ratings"]  # type: ignore[index]
    assert ratings["histogram"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}


def test_bad_ratings_are_refused() -> None:
    experiment = VersionExperiment("m@1", "m@2", 0.5)
    experiment.observe("m@1", request("a", "r"), completion(1, 1))
    with pytest.raises(InvalidRequest):
        experiment.rate(6, request_id="r", user_id="a")
    with pytest.raises(InvalidRequest):
        experiment.rate(0, request_id="r", user_id="a")
    with pytest.raises(InvalidRequest):
        VersionExperiment("m@1", "m@2", 1.5)
