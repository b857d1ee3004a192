"""The guard through the app that create_app builds, on every route that can reach a model: special-category data
anywhere in a conversation never reaches the cloud, a check that crashes refuses (503 ``security_check_failed``,
audited, counted) on both chat routes and their streams, and every fallback answer to self-harm starts with the
crisis resources. Both peers are real HTTP servers on loopback that record what reached them: one is the local side
(a self-hosted pool in the ``local`` role), the other the cloud. Every public request is complex enough for the
cloud (threshold 0), so anything the guard missed would show up at the cloud peer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.errors import Overloaded
from upcoach.privacy import special_category
from upcoach.privacy.crisis import crisis_resources
from upcoach.security import pii
from upcoach.services import Services

SYSTEM = "You are a concise coach."
ASK = "Compare three ways to plan my week and build me a 4-week schedule."


@dataclass
class Site:
    client: TestClient
    services: Services
    local: FaultServer
    cloud: FaultServer

    def clear(self) -> None:
        self.local.clear()
        self.cloud.clear()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("guard-api")
    with FaultServer() as local, FaultServer() as cloud:
        settings = Settings(
            data_dir=tmp, load_model=False, auth="off", redis_url=None, pool_urls=[local.url], pool_role="local",
            pool_model="ok", cloud_base_url=cloud.url, cloud_model="ok", cloud_api_key="k", complexity_threshold=0.0,
        )  # fmt: skip
        app = create_app(settings)
        with TestClient(app) as client:
            yield Site(client, app.state.services, local, cloud)


def hybrid(site: Site, messages: list[dict[str, str]], privacy: str = "public", **extra: Any) -> httpx.Response:
    body = {"messages": messages, "routingHints": {"privacyLevel": privacy}, "maxTokens": 8, **extra}
    return site.client.post("/api/ai/hybrid/process", json=body, headers={"x-user-id": "u-guard"})


def hybrid_stream(site: Site, messages: list[dict[str, str]], privacy: str = "public") -> tuple[int, list[str]]:
    body = {"messages": messages, "routingHints": {"privacyLevel": privacy}, "maxTokens": 8, "stream": True}
    with site.client.stream("POST", "/api/ai/hybrid/process", json=body) as response:
        return response.status_code, list(response.iter_lines())


def openai(site: Site, messages: list[dict[str, str]], privacy: str = "public", stream: bool = False) -> httpx.Response:
    body = {"model": "auto", "messages": messages, "max_tokens": 8, "stream": stream}
    return site.client.post("/v1/chat/completions", json=body, headers={"x-privacy-level": privacy})


# --- item: every role is inspected ---------------------------------------------------------------------------------

# Held-out style conversations: the sensitive words sit where the old guard never looked, or are spelled to dodge it.
LEAKS = {
    "system prompt": [
        {"role": "system", "content": f"{SYSTEM} Context about this client: diagnosed with bipolar disorder."},
        {"role": "user", "content": ASK},
    ],
    "assistant turn": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Can you remind me what I told you last time?"},
        {"role": "assistant", "content": "You said your chemotherapy starts next month and work worries you."},
        {"role": "user", "content": ASK},
    ],
    "earlier user turn": [
        {"role": "user", "content": "I'm pregnant and haven't told my manager yet."},
        {"role": "assistant", "content": "Thank you for trusting me with that."},
        {"role": "user", "content": ASK},
    ],
    "zero-width characters": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"I tested positive for H\u200bI\u200bV last week. {ASK}"},
    ],
    "soft hyphen and look-alike": [
        {"role": "user", "content": f"My dep\u00adression is back and I take sеrtraline (Cyrillic e). {ASK}"},
    ],
}


@pytest.mark.parametrize("case", sorted(LEAKS))
@pytest.mark.parametrize("route", ["hybrid", "hybrid-sse", "openai", "openai-sse"])
def test_special_category_data_anywhere_never_reaches_the_cloud(site: Site, case: str, route: str) -> None:
    site.clear()
    messages = LEAKS[case]
    if route == "hybrid":
        response = hybrid(site, messages)
        assert response.status_code == 200, response.text
        assert response.json()["processingMode"] == "local", response.json()["routing"]["reasons"]
    elif route == "hybrid-sse":
        status, lines = hybrid_stream(site, messages)
        assert status == 200 and any(line.startswith("event: done") for line in lines)
    else:
        response = openai(site, messages, stream=route == "openai-sse")
        assert response.status_code == 200, response.text
    assert site.cloud.requests == [], f"{case} reached the cloud on {route}"
    assert len(site.local.requests) == 1


def test_a_plain_public_request_still_uses_the_cloud(site: Site) -> None:
    # The control: without special-category data the same conversation shapes do reach the cloud peer.
    site.clear()
    response = hybrid(site, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}])
    assert response.json()["processingMode"] == "cloud"
    assert len(site.cloud.requests) == 1


def test_private_requests_are_redacted_in_every_role(site: Site) -> None:
    site.clear()
    messages = [
        {"role": "system", "content": f"{SYSTEM} The client is Sarah Connor, sarah.connor@example.com."},
        {"role": "user", "content": "My manager Tom Baker keeps calling +44 20 7946 0958."},
        {"role": "assistant", "content": "So Tom calls you at +44 20 7946 0958 after hours?"},
        {"role": "user", "content": ASK},
    ]
    response = hybrid(site, messages, privacy="private")
    assert response.json()["processingMode"] == "hybrid", response.json()
    seen = json.dumps(site.cloud.requests)
    assert len(site.cloud.requests) == 1
    for value in ("Sarah", "Connor", "sarah.connor@example.com", "Tom", "Baker", "7946 0958"):
        assert value not in seen, value


def test_the_route_decision_reads_every_role_too(site: Site) -> None:
    body = {"messages": LEAKS["system prompt"], "routingHints": {"privacyLevel": "public"}}
    decision = site.client.post("/api/ai/hybrid/route", json=body).json()
    assert decision["decision"] == "local" and not decision["cloudAllowed"]
    assert "special-category" in decision["reasons"][0]


def test_chips_read_every_role(site: Site) -> None:
    messages = [
        {"role": "assistant", "content": 'Last time you wrote: "I want to kill myself." How are you today?'},
        {"role": "user", "content": "A bit better."},
    ]
    body = site.client.post("/api/coach/suggestions", json={"messages": messages}).json()
    assert body["flags"] == ["self_harm"] and body["crisisResources"].startswith("It sounds like")


# --- item: a crashed check refuses ---------------------------------------------------------------------------------


def _boom(*_: object, **__: object) -> Any:
    raise RuntimeError("detector crashed")


@pytest.fixture(params=["injection", "special_category", "pii", "settings"])
def broken(request: pytest.FixtureRequest, site: Site, monkeypatch: pytest.MonkeyPatch) -> str:
    """Break one check inside the running app, the way a bug or a bad model file would."""
    check: str = request.param
    guard = site.services.hybrid.guard
    if check == "injection":
        monkeypatch.setattr(guard.injection, "scan", _boom)
    elif check == "special_category":
        monkeypatch.setattr(special_category, "detect_special_categories", _boom)
    elif check == "pii":
        monkeypatch.setattr(pii, "_candidates", _boom)
    else:
        monkeypatch.setattr(site.services.hybrid, "_privacy", _boom_async)
    return check


async def _boom_async(*_: object) -> Any:
    raise ConnectionError("settings database down")


def _refusals(site: Site, check: str) -> int:
    assert site.services.audit is not None and site.client.portal is not None
    events = site.client.portal.call(lambda: site.services.audit.query(action="request.refused", limit=1000))  # type: ignore[union-attr]
    return sum(1 for event in events if event.details.get("check") == check)


def _failures(site: Site, check: str) -> float:
    return site.services.metrics.security_check_failures.labels(check=check)._value.get()


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {"message": response.json()["error"]["message"], "type": "server_error", "param": None,
                  "code": "security_check_failed"},
    }  # fmt: skip


def test_a_crashed_check_refuses_on_both_routes_and_their_streams(site: Site, broken: str) -> None:
    site.clear()
    # Private and complex: the request would go to the cloud redacted, so the PII check runs too.
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"I'm Anna. {ASK}"}]
    audited, counted = _refusals(site, broken), _failures(site, broken)
    _assert_refused(hybrid(site, messages, privacy="private"))
    body = {"messages": messages, "routingHints": {"privacyLevel": "private"}, "maxTokens": 8, "stream": True}
    with site.client.stream("POST", "/api/ai/hybrid/process", json=body, headers={"x-user-id": "u-guard"}) as sse:
        sse.read()
        _assert_refused(sse)  # before any byte of the stream: a status code, not an event
    openai_body = {"model": "auto", "messages": messages, "max_tokens": 8, "user": "u-guard"}
    _assert_refused(site.client.post("/v1/chat/completions", json=openai_body))
    _assert_refused(site.client.post("/v1/chat/completions", json={**openai_body, "stream": True}))
    assert site.cloud.requests == [] and site.local.requests == []  # nothing reached any model
    assert _refusals(site, broken) == audited + 4
    assert _failures(site, broken) == counted + 4
    assert f'upcoach_security_check_failures_total{{check="{broken}"}}' in site.client.get("/metrics").text


@pytest.mark.parametrize("check", ["injection", "special_category"])
def test_a_crashed_check_refuses_chips_journal_and_route(
    site: Site, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    if check == "injection":
        monkeypatch.setattr(site.services.hybrid.guard.injection, "scan", _boom)
    else:
        monkeypatch.setattr(special_category, "detect_special_categories", _boom)
    site.clear()
    messages = [{"role": "user", "content": "How do I stop procrastinating?"}]
    _assert_refused(site.client.post("/api/coach/suggestions", json={"messages": messages}))
    _assert_refused(
        site.client.post(
            "/api/ai/hybrid/route", json={"messages": messages, "routingHints": {"privacyLevel": "public"}}
        )
    )
    entry = {"transcript": "Long day, but a good walk helped.", "recordedAt": "2026-11-20T21:30:00+00:00"}
    _assert_refused(site.client.post("/api/journal/entries", json=entry))
    assert site.local.requests == [] and site.cloud.requests == []


def test_a_crashed_check_refuses_the_scan_endpoint(site: Site, broken: str) -> None:
    if broken == "settings":
        pytest.skip("the scan endpoint reads no privacy settings")
    audited, counted = _refusals(site, broken), _failures(site, broken)
    _assert_refused(site.client.post("/api/ai/security/scan", json={"text": "I'm Anna, anna@example.com."}))
    assert _refusals(site, broken) == audited + 1 and _failures(site, broken) == counted + 1


# --- item: fallback answers to self-harm carry the crisis resources ------------------------------------------------

SELF_HARM = "I want to kill myself, nothing matters anymore."


@pytest.fixture
def models_down(site: Site) -> Iterator[None]:
    """The local side down (the pool peer answers 503); the cloud may not take self-harm: nobody can answer."""
    pool = site.services.hybrid.local[0]
    site.local.down()
    site.client.portal.call(pool.check)  # type: ignore[attr-defined,union-attr]  # the pool's own health probe
    yield
    site.local.up()
    site.client.portal.call(pool.check)  # type: ignore[attr-defined,union-attr]


def test_the_offline_answer_to_self_harm_starts_with_crisis_resources(site: Site, models_down: None) -> None:
    body = hybrid(site, [{"role": "user", "content": SELF_HARM}]).json()
    assert body["processingMode"] == "offline", body
    assert body["response"]["content"].startswith(crisis_resources("en"))
    assert body["routing"]["flags"] == ["self_harm"]
    assert body["offline"]["strategyIds"][0] == "support-reach-out"
    completion = openai(site, [{"role": "user", "content": SELF_HARM}]).json()
    assert completion["choices"][0]["message"]["content"].startswith(crisis_resources("en"))
    assert completion["upcoach"]["flags"] == ["self_harm"]
    plain = hybrid(site, [{"role": "user", "content": "How do I stop procrastinating?"}], privacy="sensitive").json()
    assert plain["processingMode"] == "offline" and plain["routing"]["flags"] == []
    assert site.cloud.requests == []


def test_library_chips_and_journal_insights_for_self_harm_carry_the_resources(site: Site, models_down: None) -> None:
    chips = site.client.post("/api/coach/suggestions", json={"messages": [{"role": "user", "content": SELF_HARM}]})
    body = chips.json()
    assert body["source"] == "library" and body["flags"] == ["self_harm"]
    assert body["crisisResources"] == crisis_resources("en")
    entry = {"transcript": SELF_HARM, "recordedAt": "2026-11-20T21:30:00+00:00"}
    stored = site.client.post("/api/journal/entries", json=entry).json()
    assert stored["flags"] == ["self_harm"] and stored["insightStatus"] == "pending"
    assert stored["insight"].startswith(crisis_resources("en"))


def test_crisis_resources_follow_the_language_and_the_locale(site: Site, models_down: None) -> None:
    # A Japanese message gets Japan's lines in Japanese; chips read the request's locale for the country.
    japanese = "もう生きていたくない。死にたい。"
    body = hybrid(site, [{"role": "user", "content": japanese}]).json()
    assert body["routing"]["flags"] == ["self_harm"]
    assert body["response"]["content"].startswith(crisis_resources("ja"))
    assert "0120-279-338" in body["response"]["content"] and "119" in body["response"]["content"]
    portuguese = "Não quero mais viver, quero me matar."
    chips = site.client.post(
        "/api/coach/suggestions", json={"messages": [{"role": "user", "content": portuguese}], "locale": "pt-PT"}
    ).json()
    assert chips["crisisResources"] == crisis_resources("pt", locale="pt-PT")
    assert "808 24 24 24" in chips["crisisResources"] and "188" not in chips["crisisResources"]
    entry = {"transcript": "Ich will nicht mehr leben.", "recordedAt": "2026-11-20T21:30:00+00:00"}
    stored = site.client.post("/api/journal/entries", json=entry).json()
    assert stored["insight"].startswith(crisis_resources("de")) and "0800 111 0 111" in stored["insight"]


def test_a_full_queue_still_answers_self_harm_with_crisis_resources(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the in-process model raises queue_full; here the engine is made to, the fault this test is about.
    async def full(*_: object) -> Any:
        raise Overloaded("the local queue is full", retry_after=1)

    monkeypatch.setattr(site.services.hybrid, "process", full)
    body = hybrid(site, [{"role": "user", "content": SELF_HARM}]).json()
    assert body["processingMode"] == "offline" and body["routing"]["flags"] == ["self_harm"]
    assert body["response"]["content"].startswith(crisis_resources("en"))
    busy = hybrid(site, [{"role": "user", "content": "How do I stop procrastinating?"}])
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "queue_full"
