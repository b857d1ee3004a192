"""Issue 15 through create_app: persona and grounding on what reaches the local model, strategy ids in both APIs,
and the answer checks' ladder (stricter regeneration, then the cloud where allowed, else the strategies library).

The local side is a real loopback peer (a self-hosted pool in the ``local`` role) whose answer faults are chosen
per site: a small model's refusal, code or loop cannot be caused on demand with the real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.coaching.prompts import PROMPT_VERSION, persona
from upcoach.config import Settings

WATER = "How do I drink more water during the day?"


@pytest.fixture(scope="module")
def cloud() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def site(tmp: Path, local: FaultServer, mode: str, cloud: FaultServer | None = None, **extra: Any) -> TestClient:
    settings = Settings(
        data_dir=tmp, load_model=False, auth="off", redis_url=None, pool_urls=[local.url], pool_role="local",
        pool_model=mode, **({"cloud_base_url": cloud.url, "cloud_model": "ok", "cloud_api_key": "k"} if cloud else {}),
        **extra,
    )  # fmt: skip
    return TestClient(create_app(settings))


def ask(client: TestClient, text: str = WATER, privacy: str = "private", **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": text}], "routingHints": {"privacyLevel": privacy}, **extra}
    response = client.post("/api/ai/hybrid/process", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_persona_and_grounding_reach_the_local_model_and_the_response_names_the_strategies(tmp_path: Path) -> None:
    with FaultServer() as local, site(tmp_path, local, "ok") as client:
        body = ask(client)
        sent = local.requests[-1]["messages"]
        assert sent[0]["role"] == "system" and sent[0]["content"].startswith(persona("en"))
        assert sent[-2] == {"role": "user", "content": WATER}  # the question, then the material after it
        material = sent[-1]
        assert material["role"] == "system" and "Coaching material" in material["content"]
        assert body["strategyIds"] and body["promptVersion"] == PROMPT_VERSION
        # The ids named are the ones whose titles were given.
        for sid in body["strategyIds"]:
            assert client.get(f"/api/coach/strategies/{sid}").json()["title"] in material["content"]
        # Decoding settings: no temperature from the caller means the model's own (a pool model: the default).
        assert local.requests[-1]["temperature"] == 0.7

        german = ask(client, "Wie kann ich tagsüber mehr Wasser trinken?")
        assert local.requests[-1]["messages"][0]["content"].startswith(persona("de"))
        assert german["response"]["content"]
        # A German conversation gets material from the German library, never English material.
        assert german["strategyIds"] and all(sid.endswith("-de") for sid in german["strategyIds"])
        assert len(local.requests[-1]["messages"]) == 3

        # A caller's own system prompt is kept as it is (only the canary is added); no persona then.
        response = client.post("/api/ai/hybrid/process", json={"messages": [
            {"role": "system", "content": "You are a terse coach."}, {"role": "user", "content": WATER}]})  # fmt: skip
        assert response.json()["strategyIds"] == body["strategyIds"]
        sent = local.requests[-1]["messages"]
        assert sent[0]["content"].startswith("You are a terse coach.")
        assert not any(persona("en") in m["content"] for m in sent)

        v1 = client.post("/v1/chat/completions", json={"model": "auto", "messages": [
            {"role": "user", "content": WATER}]})  # fmt: skip
        assert v1.status_code == 200
        assert v1.json()["upcoach"]["strategyIds"] == body["strategyIds"]
        assert v1.headers["x-upcoach-strategy-ids"] == ",".join(body["strategyIds"])

        # A caller that names the model gets that model as it is: no persona, no material (and no answer checks).
        pinned = client.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "user", "content": WATER}]})  # fmt: skip
        assert pinned.status_code == 200 and pinned.json()["upcoach"]["strategyIds"] == []
        assert local.requests[-1]["messages"] == [{"role": "user", "content": WATER}]


def test_grounding_and_persona_can_be_switched_off(tmp_path: Path) -> None:
    with FaultServer() as local, site(tmp_path, local, "ok", coach_persona=False, grounding=False) as client:
        body = ask(client)
        assert local.requests[-1]["messages"] == [{"role": "user", "content": WATER}]
        assert body["strategyIds"] == [] and body["promptVersion"] is None


def test_a_refusal_is_regenerated_then_answered_from_the_library_when_the_cloud_may_not_have_it(
    tmp_path: Path, cloud: FaultServer
) -> None:
    with FaultServer() as local, site(tmp_path, local, "refuse", cloud) as client:
        cloud.clear()
        body = ask(client, privacy="sensitive")
        assert "sorry" not in body["response"]["content"].lower()
        assert body["routing"]["backend"].endswith("strategies-library")
        reasons = body["routing"]["reasons"]
        assert any("refusal" in r and "regenerated with a stricter prompt" in r for r in reasons)
        assert "answer checks failed: answered from the strategies library" in reasons
        assert body["strategyIds"] and body["routing"]["fallbackUsed"]
        # Two local tries, the second with the stricter instruction; private content never went to the cloud.
        assert len(local.requests) == 2
        strict = local.requests[1]["messages"][-1]
        assert strict["role"] == "system" and "not usable (refusal" in strict["content"]
        assert cloud.requests == []
        metrics = client.get("/metrics").text
        assert 'upcoach_answer_check_failures_total{check="refusal"} 2.0' in metrics


def test_a_refusal_goes_to_the_cloud_after_the_regeneration_when_privacy_allows(
    tmp_path: Path, cloud: FaultServer
) -> None:
    with FaultServer() as local, site(tmp_path, local, "code", cloud) as client:
        cloud.clear()
        body = ask(client, "How can I stop checking my phone in bed?", privacy="public")
        assert "```" not in body["response"]["content"]
        assert body["processingMode"] == "cloud"
        assert any("unrequested_code" in r for r in body["routing"]["reasons"])
        assert len(local.requests) == 2 and len(cloud.requests) == 1


def test_a_loop_after_the_first_sentences_ends_the_answer_at_the_last_good_sentence(tmp_path: Path) -> None:
    with FaultServer() as local, site(tmp_path, local, "loop") as client:
        for stream in (False, True):
            if stream:
                with client.stream("POST", "/api/ai/hybrid/process", json={
                    "messages": [{"role": "user", "content": WATER}], "stream": True}) as response:  # fmt: skip
                    raw = "".join(response.iter_text())
                tokens, done = raw.split("event: done")
                assert tokens.count("Set a reminder to drink water.") == 1
                assert "answer ended at the last sentence that passed" in done
                continue
            body = ask(client)
            text = body["response"]["content"]
            assert text.count("Set a reminder to drink water.") == 1
            assert text.startswith("Keep a water bottle on your desk.")
            assert any("repetition" in r and "answer ended" in r for r in body["routing"]["reasons"])
