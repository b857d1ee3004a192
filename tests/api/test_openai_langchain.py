"""LangChain's ChatOpenAI against a live `upcoach serve` with the real model: ``with_structured_output`` and
``bind_tools``, the two ways frameworks ask for JSON and tool calls."""

from __future__ import annotations

from typing import Annotated

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.conftest import LiveServer


class Plan(BaseModel):
    """A short plan for a habit."""

    # Bounded, so the grammar built from the schema bounds the answer: unbounded, a greedy answer can run past
    # max_tokens on one run and not on the next (llama.cpp's arithmetic varies with the KV cache's layout).
    goal: str = Field(description="the habit in a few words", max_length=60)
    steps: list[Annotated[str, Field(max_length=80)]] = Field(
        description="two or three concrete steps", min_length=2, max_length=3
    )


class LogHabit(BaseModel):
    """Record that the user did a habit today."""

    habit: str


@pytest.fixture(scope="module")
def chat(live_server: LiveServer) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=live_server.v1, api_key="unused", model="default", temperature=0, max_tokens=400,  # type: ignore[arg-type]
        max_retries=0, timeout=900,
    )  # fmt: skip


def test_with_structured_output_returns_the_pydantic_object(chat: ChatOpenAI) -> None:
    plan = chat.with_structured_output(Plan).invoke("Help me start running in the morning.")
    assert isinstance(plan, Plan) and plan.goal.strip()


def test_with_structured_output_json_mode(chat: ChatOpenAI) -> None:
    data = chat.with_structured_output(None, method="json_mode").invoke(
        "Return a JSON object with a key 'tip' holding one short tip for better sleep."
    )
    assert isinstance(data, dict)


def test_bind_tools_returns_tool_calls_and_takes_the_result(chat: ChatOpenAI) -> None:
    model = chat.bind_tools([LogHabit], tool_choice="LogHabit")
    question = HumanMessage("I did 20 minutes of yoga today, please log it.")
    answer = model.invoke([question])
    [call] = answer.tool_calls
    assert call["name"] == "LogHabit" and isinstance(call["args"].get("habit"), str)
    streamed = None
    for chunk in model.stream([question]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.tool_calls and streamed.tool_calls[0]["name"] == "LogHabit"
    follow_up = chat.bind_tools([LogHabit]).invoke(
        [question, answer, ToolMessage('{"logged": true}', tool_call_id=call["id"])]
    )
    assert follow_up.content or follow_up.tool_calls
