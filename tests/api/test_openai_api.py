"""The official openai SDK against a live `upcoach serve` subprocess running the real default model."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import COACH_SYSTEM_PROMPT, LiveServer


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=120)


def test_models_lists_default_alias_and_catalog_name(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {"default", "qwen2.5-0.5b-instruct"} <= ids


def test_chat_answers_with_usage(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="default",
        messages=[{"role": "system", "content": COACH_SYSTEM_PROMPT},
                  {"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=16,
        temperature=0,
    )  # fmt: skip
    answer = result.choices[0].message.content or ""
    assert "paris" in answer.lower()
    assert result.model == "qwen2.5-0.5b-instruct"
    assert result.usage is not None
    assert result.usage.prompt_tokens > 100
    assert 0 < result.usage.completion_tokens <= 16
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_stream_delivers_tokens_then_usage_then_done(client: OpenAI, live_server: LiveServer) -> None:
    stream = client.chat.completions.create(
        model="qwen2.5-0.5b-instruct",
        messages=[{"role": "user", "content": "Give me one tip to drink more water."}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.strip()) > 10
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    # The raw wire ends with [DONE].
    with httpx.stream("POST", live_server.v1 + "/chat/completions", timeout=60, json={
        "model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
    }) as response:  # fmt: skip
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_seed_and_zero_temperature_are_reproducible(client: OpenAI) -> None:
    def ask() -> str:
        result = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=12,
            temperature=0.9,
            seed=1234,
        )
        return result.choices[0].message.content or ""

    assert ask() == ask()


def test_stop_sequence_ends_the_answer(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Count from 1 to 10 separated by commas."}],
        max_tokens=60,
        temperature=0,
        stop=["5"],
    )
    text = result.choices[0].message.content or ""
    assert "4" in text and "5" not in text and "6" not in text
    assert result.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length_finish(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],
        max_tokens=5,
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.completion_tokens == 5


def test_unknown_model_is_404_in_openai_shape(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_schema_error_names_the_field(live_server: LiveServer) -> None:
    response = httpx.post(live_server.v1 + "/chat/completions", json={
        "model": "default", "messages": [{"role": "wizard", "content": "hi"}]})  # fmt: skip
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.role"
    assert set(error) == {"message", "type", "param", "code"}
    response = httpx.post(live_server.v1 + "/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": "hi"}], "temperature": 7})  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"


def test_malformed_json_is_400(live_server: LiveServer) -> None:
    response = httpx.post(
        live_server.v1 + "/chat/completions", content=b'{"model": "default", "messages": [',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_body_over_limit_is_413_and_server_stays_up(live_server: LiveServer) -> None:
    huge = "x" * 2_000_000
    response = httpx.post(live_server.v1 + "/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": huge}]})  # fmt: skip
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    def chunked() -> object:
        for _ in range(40):
            yield b"y" * 65536

    response = httpx.post(live_server.v1 + "/chat/completions", content=chunked(),
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413
    assert httpx.get(live_server.base_url + "/healthz").status_code == 200


def test_prompt_longer_than_context_is_context_length_exceeded(client: OpenAI) -> None:
    long_text = "goal " * 5000  # ~5000 tokens against a 4096-token context, under the body limit
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": long_text}])
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": long_text}], stream=True)


def test_health_and_readiness(live_server: LiveServer) -> None:
    assert httpx.get(live_server.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(live_server.base_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "qwen2.5-0.5b-instruct"


def test_unknown_route_is_404_in_error_shape(live_server: LiveServer) -> None:
    response = httpx.get(live_server.base_url + "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
