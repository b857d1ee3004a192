"""The hybrid engine looks up each user's settings and picks the cloud of their region. Real HTTP peers on
loopback (FaultServer) stand in for the local side and the clouds; each records what reached it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.fault_server import FaultServer
from tests.wiring import Wiring, wiring
from upcoach.errors import BackendError, SecurityCheckFailed
from upcoach.llm.base import ChatMessage, GenerationParams
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.costs import Price, PriceTable
from upcoach.routing.engine import HybridEngine, HybridRequest, Outcome
from upcoach.routing.policy import Hints

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


@pytest.fixture(scope="module")
async def wired(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Wiring]:
    async with wiring(tmp_path_factory.mktemp("engine-settings")) as wired:
        yield wired


def engine(
    wired: Wiring,
    peers: dict[str, FaultServer],
    settings: dict[str, PrivacySettings] | Exception,
    local_model: str = "ok",
) -> tuple[HybridEngine, list[Outcome]]:
    """The shipped wiring (routing/factory.py); the settings lookup reads ``settings`` instead of the database."""
    for peer in peers.values():
        peer.clear()

    async def lookup(user_id: str) -> PrivacySettings:
        if isinstance(settings, Exception):
            raise settings
        return settings.get(user_id, PrivacySettings())

    regions = {name: {"base_url": peers[name].url, "model": "ok", "api_key": "k"} for name in ("eu", "us")}
    hybrid, recorder = wired.engine(
        [OpenAICompatBackend("pool", peers["local"].url, local_model, kind="pool", total_timeout=10)],
        privacy=lookup, cloud_base_url=peers["cloud"].url, cloud_model="ok", cloud_api_key="k",
        cloud_first_token_timeout=5, cloud_total_timeout=10, cloud_regions=regions, prices={},
        default_cloud_price={"input": 1.0, "output": 2.0}, local_cost_per_1m_tokens=0.0,
    )  # fmt: skip
    return hybrid, recorder.outcomes


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


async def test_the_cloud_is_chosen_without_settings(wired: Wiring, peers: dict[str, FaultServer]) -> None:
    hybrid, outcomes = engine(wired, peers, {})
    outcome = await hybrid.process(request(COMPLEX, "anyone"))
    assert outcome.processing_mode == "cloud" and outcome.region is None
    assert received(peers) == {"local": 0, "cloud": 1, "eu": 0, "us": 0}
    assert outcomes == [outcome]


@pytest.mark.parametrize("user", [PrivacySettings("local_only"), PrivacySettings("cloud_allowed", do_not_share=True)])
async def test_no_cloud_settings_keep_even_a_failing_local_answer_local(
    wired: Wiring, peers: dict[str, FaultServer], user: PrivacySettings
) -> None:
    hybrid, _ = engine(wired, peers, {"u": user})
    outcome = await hybrid.process(request(COMPLEX, "u"))
    assert outcome.processing_mode == "local" and outcome.reasons[0].startswith("user setting:")
    # The local side fails: the error reaches the caller, the cloud never sees the request.
    hybrid, outcomes = engine(wired, peers, {"u": user}, local_model="error-500")
    with pytest.raises(BackendError):
        await hybrid.process(request(COMPLEX, "u"))
    assert received(peers) == {"local": 1, "cloud": 0, "eu": 0, "us": 0}
    assert outcomes[0].outcome == "error" and not outcomes[0].fallback_used


async def test_a_failed_lookup_refuses_the_request(wired: Wiring, peers: dict[str, FaultServer]) -> None:
    hybrid, outcomes = engine(wired, peers, ConnectionRefusedError("database down"))
    with pytest.raises(SecurityCheckFailed) as refused:
        await hybrid.process(request(COMPLEX, "u"))
    assert refused.value.status == 503 and refused.value.code == "security_check_failed"
    assert refused.value.check == "settings"
    assert received(peers) == {"local": 0, "cloud": 0, "eu": 0, "us": 0}  # nothing reached any model
    assert 'upcoach_security_check_failures_total{check="settings"} 1.0' in hybrid.metrics.render().decode()
    audited = await wired.audit_events("request.refused")
    assert audited[-1]["actor"] == "u" and audited[-1]["details"]["check"] == "settings"  # type: ignore[index]
    with pytest.raises(SecurityCheckFailed):
        await hybrid.route(request(COMPLEX, "u"))
    # Anonymous requests need no lookup: the defaults apply.
    assert (await hybrid.process(request(COMPLEX, None))).processing_mode == "cloud"


async def test_special_categories_reach_the_cloud_only_with_cloud_allowed_and_opt_in(
    wired: Wiring,
    peers: dict[str, FaultServer],
) -> None:
    users = {
        "hybrid-opted": PrivacySettings("hybrid", special_category_cloud_opt_in=True),
        "allowed": PrivacySettings("cloud_allowed"),
        "opted": PrivacySettings("cloud_allowed", special_category_cloud_opt_in=True),
    }
    hybrid, _ = engine(wired, peers, users)
    for user in ("hybrid-opted", "allowed"):
        outcome = await hybrid.process(request(HEALTH, user))
        assert outcome.processing_mode == "local" and "special-category" in outcome.reasons[0], user
    assert received(peers)["cloud"] == 0
    outcome = await hybrid.process(request(HEALTH, "opted"))
    assert outcome.processing_mode == "cloud"
    assert "user setting: special_category_cloud_opt_in" in outcome.reasons[0]
    assert received(peers)["cloud"] == 1


async def test_each_region_uses_only_its_own_endpoint(wired: Wiring, peers: dict[str, FaultServer]) -> None:
    users = {"e": PrivacySettings(region="eu"), "u": PrivacySettings(region="us"), "a": PrivacySettings(region="ap")}
    hybrid, outcomes = engine(wired, peers, users)
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
