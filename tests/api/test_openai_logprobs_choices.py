"""``logprobs``/``top_logprobs`` and ``n > 1`` from the local model, with the official openai SDK against a live
`upcoach serve` running the real default model: chat and legacy completions, streamed and not."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from tests.conftest import LiveServer

ASK = [{"role": "user", "content": "Name one fruit."}]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=live_server.v1, api_key="unused", max_retries=0, timeout=300)


def _check_entries(entries: list, content: str, top: int) -> None:
    assert entries, "no log probabilities came back"
    assert b"".join(bytes(e.bytes) for e in entries).decode("utf-8") == content  # the tokens make up the text
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == top
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        if top:
            # The chosen token is at most as likely as the most likely one (greedy: it is the most likely one).
            assert entry.logprob <= values[0] + 1e-6


def test_chat_logprobs_match_the_content_streamed_and_not(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="default", messages=ASK, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = result.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    _check_entries(choice.logprobs.content, choice.message.content or "", 3)
    greedy = choice.logprobs.content[0]
    assert greedy.token == greedy.top_logprobs[0].token  # temperature 0 picks the most likely token
    assert len(choice.logprobs.content) == result.usage.completion_tokens  # type: ignore[union-attr]

    stream = client.chat.completions.create(
        model="default", messages=ASK, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3, stream=True
    )
    text, entries = "", []
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs is not None and c.logprobs.content:
                entries += c.logprobs.content
    assert text == choice.message.content
    _check_entries(entries, text, 3)
    assert [e.token for e in entries] == [e.token for e in choice.logprobs.content]


def test_logprobs_without_top_and_off_by_default(client: OpenAI) -> None:
    result = client.chat.completions.create(model="default", messages=ASK, max_tokens=6, temperature=0, logprobs=True)
    assert result.choices[0].logprobs is not None
    _check_entries(result.choices[0].logprobs.content or [], result.choices[0].message.content or "", 0)
    plain = client.chat.completions.create(model="default", messages=ASK, max_tokens=6, temperature=0)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize(
    "extra",
    [{"logprobs": True, "top_logprobs": 21}, {"top_logprobs": 2}, {"n": 9}, {"n": 0}],
)
def test_out_of_bounds_is_a_400_naming_the_field(live_server: LiveServer, extra: dict[str, object]) -> None:
    response = httpx.post(live_server.v1 + "/chat/completions", timeout=30, json={
        "model": "default", "messages": ASK, "max_tokens": 4, **extra,
    })  # fmt: skip
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_request", "unsupported_parameter")
    assert error["param"] in extra


def test_n_with_tools_is_refused_clearly(live_server: LiveServer) -> None:
    tool = {"type": "function", "function": {"name": "log_habit", "parameters": {"type": "object"}}}
    response = httpx.post(live_server.v1 + "/chat/completions", timeout=30, json={
        "model": "default", "messages": ASK, "max_tokens": 4, "n": 2, "tools": [tool],
    })  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unsupported_parameter"


def test_n_choices_differ_with_a_seed_and_are_reproducible(client: OpenAI) -> None:
    def ask() -> list[str]:
        result = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Suggest a name for a pet cat."}],
            max_tokens=10, temperature=1.0, seed=7, n=3,
        )  # fmt: skip
        assert [c.index for c in result.choices] == [0, 1, 2]
        assert all(c.finish_reason in ("stop", "length") for c in result.choices)
        total = sum(c.message.content and 1 or 0 for c in result.choices)
        assert total == 3
        assert result.usage is not None and result.usage.completion_tokens > 10  # summed over the choices
        return [c.message.content or "" for c in result.choices]

    ask()  # the prompt's cells are now cached: the runs below start from the same state (llama.cpp's arithmetic
    # depends on how a prompt was split into batches, so a cold first run may differ in the last bits)
    first = ask()
    assert len(set(first)) > 1  # each choice samples with its own seed
    assert ask() == first


def test_n_streams_every_choice_under_its_index(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="default", messages=ASK, max_tokens=8, temperature=0.8, seed=3, n=2, stream=True,
        stream_options={"include_usage": True}, logprobs=True,
    )  # fmt: skip
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    entries: dict[int, list] = {0: [], 1: []}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.logprobs is not None and c.logprobs.content:
                entries[c.index] += c.logprobs.content
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert set(finishes) == {0, 1} and all(texts.values())
    for index in (0, 1):
        _check_entries(entries[index], texts[index], 0)
    assert usage is not None and usage.completion_tokens == len(entries[0]) + len(entries[1])  # summed


def test_n_with_json_output_gives_valid_json_in_every_choice(client: OpenAI) -> None:
    result = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Give me a habit idea as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "habit", "strict": True, "schema": {
            "type": "object", "properties": {"habit": {"type": "string", "maxLength": 40}},
            "required": ["habit"], "additionalProperties": False}}},
        max_tokens=40, temperature=0.9, seed=11, n=2,
    )  # fmt: skip
    assert len(result.choices) == 2
    for choice in result.choices:
        assert choice.finish_reason == "stop"
        assert isinstance(json.loads(choice.message.content or "")["habit"], str)


def test_legacy_completion_logprobs_and_n(client: OpenAI) -> None:
    prompt = "The three primary colors are red, yellow and"
    result = client.completions.create(model="default", prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    [choice] = result.choices
    lp = choice.logprobs
    assert lp is not None and lp.tokens and "".join(lp.tokens) == choice.text
    assert all(v <= 0 for v in lp.token_logprobs or [])
    assert all(len(top) == 2 for top in lp.top_logprobs or [])
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]

    many = client.completions.create(model="default", prompt=prompt, max_tokens=4, temperature=1.0, seed=5, n=2)
    assert [c.index for c in many.choices] == [0, 1] and all(c.text for c in many.choices)
    streamed: dict[int, str] = {0: "", 1: ""}
    for chunk in client.completions.create(
        model="default", prompt=prompt, max_tokens=4, temperature=1.0, seed=5, n=2, stream=True
    ):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert streamed == {c.index: c.text for c in many.choices}
