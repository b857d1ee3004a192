"""The hybrid engine looks up each user's settings and picks the cloud of their region. Real HTTP peers on
loopback (FaultServer) stand in for the local side and the clouds; each records what reached it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fakes.fault_server import FaultServer
from upcoach.errors import BackendError
from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.observability.metrics import Metrics
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.breaker import BreakerConfig, CircuitBreaker, MemoryBreakerStore
from upcoach.routing.costs import CloudBudget, Price, PriceTable
from upcoach.routing.engine import HybridEngine, HybridRequest, Outcome, RegionalCloud
from upcoach.routing.policy import Hints, PolicyConfig

pytestmark = pytest.mark.asyncio(loop_scope="session")

COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
HEALTH = (
    "I was diagnosed with depression and take sertraline. Compare CBT and ACT and build me a detailed "
    "12-week plan with weekly milestones."
)
PRICES = PriceTable({}, Price(1.0, 2.0), 0.0)


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, FaultServer]]:
    servers = {name: FaultServer() for name in ("local", "cloud", "eu", "us")}
    for server in servers.values():
        server.__enter__()
    yield servers
    for server in servers.values():
        server.__exit__(None, None, None)


def engine(
    peers: dict[str, FaultServer], settings: dict[str, PrivacySettings] | Exception, local_model: str = "ok"
) -> tuple[HybridEngine, list[Outcome]]:
    for peer in peers.values():
        peer.clear()

    async def lookup(user_id: str) -> PrivacySettings:
        if isinstance(settings, Exception):
            raise settings
        return settings.get(user_id, PrivacySettings())

    def cloud(name: str) -> OpenAICompatBackend:
        return OpenAICompatBackend(name, peers[name].url, "ok", api_key="k", first_token_timeout=5, total_timeout=10)

    def breaker(name: str) -> CircuitBreaker:
        return CircuitBreaker(name, BreakerConfig(), MemoryBreakerStore())

    outcomes: list[Outcome] = []

    async def record(outcome: Outcome) -> None:
        outcomes.append(outcome)

    hybrid = HybridEngine(
        local=[OpenAICompatBackend("pool", peers["local"].url, local_model, kind="pool", total_timeout=10)],
        cloud=cloud("cloud"),
        cloud_breaker=breaker("cloud"),
        cloud_model="ok",
        prices=PRICES,
        budget=CloudBudget(None),
        policy=PolicyConfig(0.5, redact_private=True),
        metrics=Metrics(),
        record=record,
        regions={name: RegionalCloud(cloud(name), breaker(name), "ok") for name in ("eu", "us")},
        privacy=lookup,
    )
    return hybrid, outcomes


def request(text: str, user_id: str | None, privacy: str = "public") -> HybridRequest:
    return HybridRequest(
        messages=(ChatMessage("user", text),),
        params=GenerationParams(max_tokens=8, temperature=0),
        hints=Hints(privacy_level=privacy, prefer_local=False),  # type: ignore[arg-type]
        request_id=f"req_{uuid.uuid4().hex}",
        user_id=user_id,
    )


def received(peers: dict[str, FaultServer]) -> dict[str, int]:
    return {name: len(peer.requests) for name, peer in peers.items()}


async def test_the_cloud_is_chosen_without_settings(peers: dict[str, FaultServer]) -> None:
    hybrid, outcomes = engine(peers, {})
    outcome = await hybrid.process(request(COMPLEX, "anyone"))
    assert outcome.processing_mode == "cloud" and outcome.region is None
    assert received(peers) == {"local": 0, "cloud": 1, "eu": 0, "us": 0}
    assert outcomes == [outcome]


@pytest.mark.parametrize("user", [PrivacySettings("local_only"), PrivacySettings("cloud_allowed", do_not_share=True)])
async def test_no_cloud_settings_keep_even_a_failing_local_answer_local(
    peers: dict[str, FaultServer], user: PrivacySettings
) -> None:
    hybrid, _ = engine(peers, {"u": user})
    outcome = await hybrid.process(request(COMPLEX, "u"))
    assert outcome.processing_mode == "local" and outcome.reasons[0].startswith("user setting:")
    # The local side fails: the error reaches the caller, the cloud never sees the request.
    hybrid, outcomes = engine(peers, {"u": user}, local_model="error-500")
    with pytest.raises(BackendError):
        await hybrid.process(request(COMPLEX, "u"))
    assert received(peers) == {"local": 1, "cloud": 0, "eu": 0, "us": 0}
    assert outcomes[0].outcome == "error" and not outcomes[0].fallback_used


async def test_a_failed_lookup_is_treated_as_local_only(peers: dict[str, FaultServer]) -> None:
    hybrid, _ = engine(peers, ConnectionRefusedError("database down"))
    outcome = await hybrid.process(request(COMPLEX, "u"))
    assert outcome.processing_mode == "local"
    assert "privacy settings unavailable (ConnectionRefusedError)" in outcome.reasons[0]
    assert received(peers)["cloud"] == 0
    # Anonymous requests need no lookup: the defaults apply.
    assert (await hybrid.process(request(COMPLEX, None))).processing_mode == "cloud"


async def test_special_categories_reach_the_cloud_only_with_cloud_allowed_and_opt_in(
    peers: dict[str, FaultServer],
) -> None:
    users = {
        "hybrid-opted": PrivacySettings("hybrid", special_category_cloud_opt_in=True),
        "allowed": PrivacySettings("cloud_allowed"),
        "opted": PrivacySettings("cloud_allowed", special_category_cloud_opt_in=True),
    }
    from upcoach.security.guard import Guard

    hybrid, _ = engine(peers, users)
    hybrid.guard = Guard()
    for user in ("hybrid-opted", "allowed"):
        outcome = await hybrid.process(request(HEALTH, user))
        assert outcome.processing_mode == "local" and "special-category" in outcome.reasons[0], user
    assert received(peers)["cloud"] == 0
    outcome = await hybrid.process(request(HEALTH, "opted"))
    assert outcome.processing_mode == "cloud"
    assert "user setting: special_category_cloud_opt_in" in outcome.reasons[0]
    assert received(peers)["cloud"] == 1


async def test_each_region_uses_only_its_own_endpoint(peers: dict[str, FaultServer]) -> None:
    users = {"e": PrivacySettings(region="eu"), "u": PrivacySettings(region="us"), "a": PrivacySettings(region="ap")}
    hybrid, outcomes = engine(peers, users)
    eu = await hybrid.process(request(COMPLEX, "e"))
    assert (eu.processing_mode, eu.backend, eu.region) == ("cloud", "cloud-eu", "eu")
    assert received(peers) == {"local": 0, "cloud": 0, "eu": 1, "us": 0}
    us = await hybrid.process(request(COMPLEX, "u"))
    assert (us.backend, us.region) == ("cloud-us", "us")
    assert received(peers) == {"local": 0, "cloud": 0, "eu": 1, "us": 1}
    ap = await hybrid.process(request(COMPLEX, "a"))
    assert ap.processing_mode == "local" and ap.region is None
    assert any("no cloud endpoint in region ap" in reason for reason in ap.reasons)
    assert received(peers) == {"local": 1, "cloud": 0, "eu": 1, "us": 1}
    decision, _, _, _ = await hybrid.route(request(COMPLEX, "e"))
    assert decision.target == "cloud" and decision.region == "eu"
