"""The routing rules of issue 20 through the app create_app builds: an operator's instructions are not data, a
person's status is data in any role, topic questions and generation-heavy asks are routed by what the answer needs.
Both peers are real HTTP servers on loopback that record what reached them (the local side is a self-hosted pool in
the ``local`` role); the complexity threshold is the shipped default."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.privacy.crisis import crisis_resources

# What integrators write: rules about topics, which the guard (reading every role since issue 12) took for data.
INSTRUCTIONS = (
    "You are a coach, not a therapist. Do not diagnose. If the user mentions depression or suicide, refer them to a "
    "professional."
)
CURRICULUM = "Write an 8-session curriculum for a stress course, with objectives, exercises and homework for each."
TOPIC = "What is CBT and how do therapy techniques like reframing work?"


@dataclass
class Site:
    client: TestClient
    local: FaultServer
    cloud: FaultServer


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("routing-rules")
    with FaultServer() as local, FaultServer() as cloud:
        settings = Settings(
            data_dir=tmp, load_model=False, auth="off", redis_url=None, pool_urls=[local.url], pool_role="local",
            pool_model="ok", cloud_base_url=cloud.url, cloud_model="ok", cloud_api_key="k",
        )  # fmt: skip
        assert settings.complexity_threshold == 0.5  # the shipped default decides these tests
        with TestClient(create_app(settings)) as client:
            yield Site(client, local, cloud)


def hybrid(site: Site, messages: list[dict[str, str]], privacy: str = "public") -> dict[str, Any]:
    site.local.clear()
    site.cloud.clear()
    body = {"messages": messages, "routingHints": {"privacyLevel": privacy}, "maxTokens": 8}
    response = site.client.post("/api/ai/hybrid/process", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def openai(site: Site, messages: list[dict[str, str]]) -> str:
    """The answer of /v1/chat/completions (model ``auto``, public); the peers record where it went."""
    site.local.clear()
    site.cloud.clear()
    body = {"model": "auto", "messages": messages, "max_tokens": 8}
    response = site.client.post("/v1/chat/completions", json=body, headers={"x-privacy-level": "public"})
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_an_instruction_system_prompt_is_not_data_and_adds_no_crisis_resources(site: Site) -> None:
    body = hybrid(site, chat(INSTRUCTIONS, CURRICULUM))
    assert body["processingMode"] == "cloud", body["routing"]["reasons"]
    assert body["routing"]["flags"] == []
    assert not body["response"]["content"].startswith(crisis_resources("en")[:40])
    assert len(site.cloud.requests) == 1 and site.local.requests == []
    simple = hybrid(site, chat(INSTRUCTIONS, "How do I drink more water?"))
    assert simple["processingMode"] == "local" and simple["routing"]["flags"] == []
    assert not any("special-category" in reason for reason in simple["routing"]["reasons"])
    assert not simple["response"]["content"].startswith(crisis_resources("en")[:40])


def test_the_openai_route_reads_the_instructions_the_same_way(site: Site) -> None:
    answer = openai(site, chat(INSTRUCTIONS, CURRICULUM))
    assert len(site.cloud.requests) == 1 and site.local.requests == []
    assert not answer.startswith(crisis_resources("en")[:40])


STATUS_IN_EVERY_ROLE = {
    "system": chat(
        f"{INSTRUCTIONS} Context about this client: diagnosed with bipolar disorder, takes lithium.", CURRICULUM
    ),
    "developer": [
        {"role": "developer", "content": "User profile: type 1 diabetes, uses an insulin pump."},
        {"role": "user", "content": CURRICULUM},
    ],
    "assistant": [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "Can you remind me what we said?"},
        {"role": "assistant", "content": "You told me you take sertraline and mornings are slow."},
        {"role": "user", "content": CURRICULUM},
    ],
    "user": chat(INSTRUCTIONS, f"My son has ADHD. {CURRICULUM}"),
    "tool": [
        {"role": "system", "content": INSTRUCTIONS},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "client_profile", "arguments": "{}"}}
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": '{"diagnosis": "generalised anxiety disorder", "medication": "escitalopram"}',
        },
        {"role": "user", "content": CURRICULUM},
    ],
}


@pytest.mark.parametrize("role", sorted(STATUS_IN_EVERY_ROLE))
def test_a_persons_status_is_caught_in_every_role(site: Site, role: str) -> None:
    messages = STATUS_IN_EVERY_ROLE[role]
    if role in ("system", "assistant", "user"):  # the roles the plan's hybrid route accepts
        body = hybrid(site, messages)
        assert body["processingMode"] == "local", body["routing"]["reasons"]
        assert "special-category" in body["routing"]["reasons"][0]
        assert site.cloud.requests == []
    openai(site, messages)
    assert site.cloud.requests == [] and len(site.local.requests) == 1


def test_self_harm_from_the_user_still_gets_crisis_resources_behind_an_instruction_prompt(site: Site) -> None:
    body = hybrid(site, chat(INSTRUCTIONS, "What are the warning signs of suicide? I think about it every night."))
    assert body["processingMode"] == "local" and body["routing"]["flags"] == ["self_harm"]
    assert body["response"]["content"].startswith(crisis_resources("en"))
    assert site.cloud.requests == []


def test_a_topic_question_is_routed_by_its_complexity(site: Site) -> None:
    short = hybrid(site, chat(INSTRUCTIONS, TOPIC))
    assert short["processingMode"] == "local"
    assert short["routing"]["reasons"][0].startswith("simple request"), short["routing"]["reasons"]
    article = hybrid(site, chat(INSTRUCTIONS, "Write a 1,000-word article on how therapy techniques like CBT help."))
    assert article["processingMode"] == "cloud", article["routing"]["reasons"]
    assert len(site.cloud.requests) == 1


@pytest.mark.parametrize(
    "ask",
    [
        CURRICULUM,
        "Make me a week-by-week schedule for the next 6 weeks in a table.",
        "Erstelle einen 12-Wochen-Trainingsplan mit Ruhetagen.",
        "Fais-moi un planning semaine par semaine sous forme de tableau.",
    ],
)
def test_generation_heavy_asks_go_to_the_cloud_when_public(site: Site, ask: str) -> None:
    body = hybrid(site, chat("You are a concise coach.", ask))
    assert body["processingMode"] == "cloud", body["routing"]["reasons"]
    assert "complex request" in body["routing"]["reasons"][0]
    assert len(site.cloud.requests) == 1 and site.local.requests == []
    # The privacy order is unchanged: private goes redacted, sensitive never leaves.
    assert hybrid(site, chat("You are a concise coach.", ask), privacy="private")["processingMode"] == "hybrid"
    assert hybrid(site, chat("You are a concise coach.", ask), privacy="sensitive")["processingMode"] == "local"
    assert site.cloud.requests == []


def test_route_decision_endpoint_explains_the_deliverable(site: Site) -> None:
    body = {"messages": chat("You are a concise coach.", CURRICULUM), "routingHints": {"privacyLevel": "public"}}
    decision = site.client.post("/api/ai/hybrid/route", json=body).json()
    assert decision["decision"] == "cloud"
    assert "long deliverable" in decision["reasons"][0]
