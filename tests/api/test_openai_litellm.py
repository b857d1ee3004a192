"""LiteLLM's client (``litellm.completion`` with an ``openai/`` model) against a live `upcoach serve` running the real
default model: plain, streamed, a json_schema response_format, and tools."""

from __future__ import annotations

import json

import pytest

from tests.api.test_openai_structured import REMINDER_TOOL
from tests.conftest import LiveServer

litellm = pytest.importorskip("litellm", reason="litellm is in the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def ask(live_server: LiveServer):  # type: ignore[no-untyped-def]
    litellm.telemetry = False

    def call(**kwargs: object) -> object:
        return litellm.completion(
            model="openai/default", api_base=live_server.v1, api_key="unused", timeout=300, num_retries=0,
            **kwargs,
        )  # fmt: skip

    return call


def test_plain_and_streamed(ask) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": "Say hello in three words."}]
    result = ask(messages=messages, max_tokens=12, temperature=0)
    text = result.choices[0].message.content
    assert text and result.usage.completion_tokens > 0
    chunks = list(ask(messages=messages, max_tokens=12, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text


def test_json_schema_response_format_parses(ask) -> None:  # type: ignore[no-untyped-def]
    schema = {
        "type": "object",
        "properties": {"goal": {"type": "string", "maxLength": 60}, "minutes": {"type": "integer"}},
        "required": ["goal", "minutes"],
        "additionalProperties": False,
    }
    result = ask(
        messages=[{"role": "user", "content": "Suggest one daily exercise goal."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "goal", "schema": schema, "strict": True}},
    )  # fmt: skip
    goal = json.loads(result.choices[0].message.content)
    assert isinstance(goal["goal"], str) and isinstance(goal["minutes"], int)


def test_tools_return_a_call_to_execute(ask) -> None:  # type: ignore[no-untyped-def]
    result = ask(
        messages=[{"role": "user", "content": "Remind me to stretch at 15:00 today."}], tools=[REMINDER_TOOL],
        tool_choice="required", max_tokens=80, temperature=0,
    )  # fmt: skip
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "set_reminder"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"time", "text"}
