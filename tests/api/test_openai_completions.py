"""/v1/completions (legacy text completions) with the official openai SDK against a live `upcoach serve`."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.conftest import LiveServer

PROMPT = "The three primary colors are red, yellow and"


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=300)


def test_text_is_continued_without_the_chat_template(client: OpenAI) -> None:
    result = client.completions.create(model="default", prompt=PROMPT, max_tokens=4, temperature=0)
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    [choice] = result.choices
    assert "blue" in choice.text.lower()  # a continuation of the sentence, not a chat reply
    assert choice.finish_reason in ("length", "stop")
    assert result.usage is not None and 0 < result.usage.completion_tokens <= 4
    assert result.usage.prompt_tokens < 20  # the raw prompt only: no template, no system prompt
    echoed = client.completions.create(model="default", prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == PROMPT + choice.text


def test_streamed_completion_matches_and_ends_with_usage(client: OpenAI) -> None:
    whole = client.completions.create(model="default", prompt=PROMPT, max_tokens=6, temperature=0)
    chunks = list(client.completions.create(
        model="default", prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_unsupported_completion_fields_are_named(live_server: LiveServer) -> None:
    for field, value in (("best_of", 3), ("suffix", "end"), ("prompt", ["a", "b"]), ("n", 9), ("logprobs", 6)):
        response = httpx.post(live_server.v1 + "/completions", timeout=30,
                              json={"model": "default", "prompt": "Hi", field: value})  # fmt: skip
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["param"].startswith(field)
