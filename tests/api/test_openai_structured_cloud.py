"""Structured output and tool calls through the hybrid engine to a cloud peer: the fields are passed on, the peer's
``tool_calls`` come back as OpenAI ``tool_calls``, and the answer is checked on the way back.

The cloud peer is a second live `upcoach serve` on loopback (the session's ``live_server``): a real
OpenAI-compatible server that honours ``response_format`` and ``tools``, so the pass-through is tested end to end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.api.test_openai_structured import HABIT_TOOL, REMINDER_TOOL
from tests.conftest import LiveServer, model_server

PUBLIC = {"X-Privacy-Level": "public"}


class Tip(BaseModel):
    title: str
    steps: list[str]


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, live_server: LiveServer
) -> Iterator[LiveServer]:
    env = {
        "UPCOACH_CLOUD_BASE_URL": live_server.v1,
        "UPCOACH_CLOUD_MODEL": "default",
        "UPCOACH_CLOUD_API_KEY": "test-key",
        "UPCOACH_CLOUD_FIRST_TOKEN_TIMEOUT": "120",
        "UPCOACH_CLOUD_TOTAL_TIMEOUT": "240",
        # Every public request goes to the cloud, however simple.
        "UPCOACH_COMPLEXITY_THRESHOLD": "0",
    }
    with model_server(tmp_path_factory, model_path, "gateway", env) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: LiveServer) -> OpenAI:
    return OpenAI(base_url=gateway.v1, api_key="unused", max_retries=0, timeout=300, default_headers=PUBLIC)


def test_parse_through_the_cloud(client: OpenAI) -> None:
    result = client.chat.completions.parse(
        model="auto",
        messages=[{"role": "user", "content": "Give me a tip to drink more water."}],
        response_format=Tip,
        max_tokens=150,
        temperature=0,
    )
    assert result.model == "default"  # the cloud peer's model name: the cloud answered
    assert isinstance(result.choices[0].message.parsed, Tip)


def test_tool_calls_through_the_cloud_streamed_and_not(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Please log my habit: I meditated today."}]
    result = client.chat.completions.create(
        model="auto", messages=messages, tools=[REMINDER_TOOL, HABIT_TOOL], tool_choice="required",
        parallel_tool_calls=False, max_tokens=100, temperature=0,
    )  # fmt: skip
    assert result.model == "default"
    [call] = result.choices[0].message.tool_calls or []
    assert result.choices[0].finish_reason == "tool_calls"
    assert call.function.name in ("set_reminder", "log_habit")
    assert isinstance(json.loads(call.function.arguments), dict)

    stream = client.chat.completions.create(
        model="auto", messages=messages, tools=[HABIT_TOOL],
        tool_choice={"type": "function", "function": {"name": "log_habit"}}, max_tokens=100, temperature=0,
        stream=True,
    )  # fmt: skip
    chunks = [c for c in stream if c.choices]
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].function and deltas[0].function.name == "log_habit"
    assert "habit" in json.loads("".join(d.function.arguments or "" for d in deltas if d.function))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # The next turn goes to the cloud with the call and its result in OpenAI's shape (ids kept).
    follow_up = client.chat.completions.create(
        model="auto",
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": deltas[0].id, "type": "function",
                 "function": {"name": "log_habit", "arguments": '{"habit": "meditation"}'}}]},
            {"role": "tool", "tool_call_id": deltas[0].id, "content": '{"logged": true, "streak_days": 4}'},
        ],
        tools=[HABIT_TOOL],
        max_tokens=40,
        temperature=0,
    )  # fmt: skip
    assert follow_up.model == "default"
    assert follow_up.choices[0].message.content or follow_up.choices[0].message.tool_calls


def test_logprobs_and_n_through_the_cloud_streamed_and_not(client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Name one healthy snack."}]
    result = client.chat.completions.create(
        model="auto", messages=messages, max_tokens=10, temperature=0.9, seed=5, n=2, logprobs=True, top_logprobs=2
    )
    assert result.model == "default"  # the cloud peer answered, with the fields passed on
    assert [c.index for c in result.choices] == [0, 1]
    for choice in result.choices:
        entries = choice.logprobs.content if choice.logprobs else None
        assert entries and all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in entries)
        assert b"".join(bytes(e.bytes or []) for e in entries).decode() == choice.message.content

    texts: dict[int, str] = {0: "", 1: ""}
    counted: dict[int, int] = {0: 0, 1: 0}
    for chunk in client.chat.completions.create(
        model="auto", messages=messages, max_tokens=10, temperature=0.9, seed=5, n=2, logprobs=True, stream=True
    ):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            counted[c.index] += len(c.logprobs.content or []) if c.logprobs else 0
    assert all(texts.values()) and all(counted.values())
