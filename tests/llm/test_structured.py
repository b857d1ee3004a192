"""llm/structured.py: the grammars it builds parse in llama.cpp (the real model's vocabulary), tool calls are split
out of streamed text wherever the pieces break, and answers that do not follow what was asked are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from upcoach.errors import InvalidOutput
from upcoach.llm.base import ChatMessage, ChatRequest, Function, ResponseFormat, Tools
from upcoach.llm.structured import CallSplitter, ToolCall, call_text, check_answer, for_local

# Property names equal to the converter's own rule names (string, space, root): renaming must not touch literals.
AWKWARD = Function(
    "note",
    {
        "type": "object",
        "properties": {"string": {"type": "integer"}, "space": {"type": "string"}, "root": {"enum": ["a", "b"]}},
        "required": ["string", "root"],
    },
)
REMIND = Function(
    "set_reminder",
    {"type": "object", "properties": {"time": {"type": "string"}}, "required": ["time"], "additionalProperties": False},
)
PLAN = ResponseFormat(
    "json_schema", {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "string"}}},
                    "required": ["steps"]},
)  # fmt: skip
USER = (ChatMessage("system", "You are a coach."), ChatMessage("user", "Remind me at 9."))


@pytest.fixture(scope="module")
def vocab(model_path: Path) -> object:
    from llama_cpp import Llama

    return Llama(model_path=str(model_path), vocab_only=True, verbose=False)._model.vocab


@pytest.mark.parametrize(
    ("response_format", "tools"),
    [
        (PLAN, None),
        (ResponseFormat("json_object"), None),
        (None, Tools((AWKWARD, REMIND))),
        (None, Tools((AWKWARD, REMIND), "required", parallel=False)),
        (None, Tools((AWKWARD, REMIND), "set_reminder")),
        (PLAN, Tools((REMIND,))),
    ],
)
def test_local_grammars_parse_in_llama_cpp(
    vocab: object, response_format: ResponseFormat | None, tools: Tools | None
) -> None:
    import llama_cpp

    local = for_local(ChatRequest(USER, response_format=response_format, tools=tools))
    assert local.grammar is not None
    compiled = llama_cpp.llama_sampler_init_grammar(vocab, local.grammar.encode(), b"root")
    assert compiled, local.grammar
    llama_cpp.llama_sampler_free(compiled)
    assert local.messages[0].content.startswith("You are a coach.\n\n")  # the caller's system prompt stays first
    if tools is not None:
        assert "<tools>" in local.messages[0].content and REMIND.name in local.messages[0].content


def test_plain_requests_are_left_alone() -> None:
    chat = ChatRequest(USER)
    assert for_local(chat) is chat


def test_splitter_finds_calls_however_the_text_is_cut() -> None:
    text = call_text("set_reminder", '{"time": "09:00"}') + "\n" + call_text("note", {"string": 1, "root": "a"})
    for size in (1, 3, 7, len(text)):
        splitter = CallSplitter(active=True)
        out = [p for i in range(0, len(text), size) for p in splitter.feed(text[i : i + size])]
        out += list(splitter.flush())
        assert out == [ToolCall("set_reminder", '{"time": "09:00"}'), ToolCall("note", '{"string": 1, "root": "a"}')]


def test_splitter_passes_prose_and_a_cloud_s_prose_then_calls() -> None:
    splitter = CallSplitter(active=True)
    assert list(splitter.feed("<")) == []  # might still become a call
    assert list(splitter.feed("b>Well")) == ["<b>Well"]
    splitter = CallSplitter(active=True)
    out = list(splitter.feed("Sure.")) + list(splitter.feed("\n" + call_text("set_reminder", {"time": "9"})))
    assert out == ["Sure.", ToolCall("set_reminder", '{"time": "9"}')]
    assert list(CallSplitter(active=False).feed("<tool_call>")) == ["<tool_call>"]


@pytest.mark.parametrize(
    ("text", "response_format", "tools", "problem"),
    [
        ('{"steps": "run"}', PLAN, None, "steps"),
        ("Here you go: {}", ResponseFormat("json_object"), None, "not valid JSON"),
        ("[1, 2]", ResponseFormat("json_object"), None, "not an object"),
        (call_text("set_reminder", {"when": "9"}), None, Tools((REMIND,)), "arguments"),
        (call_text("delete_account", {}), None, Tools((REMIND,)), "not a function"),
        (call_text("note", {"string": 1, "root": "a"}), None, Tools((AWKWARD, REMIND), "set_reminder"), "not a"),
        ("I will remind you.", None, Tools((REMIND,), "required"), "required"),
        (call_text("set_reminder", {"time": "9"}) * 2, None, Tools((REMIND,), parallel=False), "one tool call"),
    ],
)
def test_answers_that_do_not_follow_the_request_are_refused(
    text: str, response_format: ResponseFormat | None, tools: Tools | None, problem: str
) -> None:
    with pytest.raises(InvalidOutput, match=problem):
        check_answer(text, response_format, tools)


def test_good_answers_pass() -> None:
    assert check_answer('{"steps": ["walk"]}', PLAN, None) == []
    calls = check_answer(call_text("set_reminder", {"time": "9"}), None, Tools((REMIND,), "required"))
    assert calls == [ToolCall("set_reminder", '{"time": "9"}')]
    assert check_answer("Prose is fine with auto.", None, Tools((REMIND,))) == []


@pytest.mark.parametrize(
    "ref", ["https://127.0.0.1:9/schema.json", "http://169.254.169.254/latest", "file:///etc/passwd"]
)
def test_schemas_may_not_reference_outside_themselves(ref: str) -> None:
    """llama.cpp's converter fetches https references: a caller must not make us fetch a URL."""
    from upcoach.errors import InvalidRequest
    from upcoach.llm.structured import check_schema

    with pytest.raises(InvalidRequest, match=r"\$ref"):
        check_schema({"type": "object", "properties": {"a": {"$ref": ref}}}, "response_format.json_schema.schema")
    check_schema({"$defs": {"t": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/t"}}}, "x")


def test_tool_choice_none_hides_the_tools_from_the_local_model_and_keeps_them_for_the_cloud() -> None:
    from upcoach.llm.openai_compat import OpenAICompatBackend

    tools = Tools((REMIND,), "none")
    chat = ChatRequest(USER, tools=tools)
    local = for_local(chat)
    assert local.grammar is None and local.messages == USER and local.tools is None
    assert check_answer(call_text("set_reminder", {"time": "9"}), None, tools) == []  # not read as a call
    body = OpenAICompatBackend("cloud", "http://127.0.0.1:9/v1", "m")._body(chat)
    assert body["tool_choice"] == "none" and body["tools"][0]["function"]["name"] == "set_reminder"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 10**9},
        {"type": "array", "items": {"type": "string"}, "minItems": 100_000},
        {"type": "object", "properties": {"a": {"type": "string", "minLength": 600}}},
    ],
)
def test_schemas_too_big_to_enforce_are_refused(schema: dict[str, object]) -> None:
    """A bounded repetition becomes that many grammar rules in llama.cpp: one huge bound would exhaust memory."""
    from upcoach.errors import InvalidRequest
    from upcoach.llm.structured import check_schema

    with pytest.raises(InvalidRequest, match="enforce"):
        check_schema(schema, "response_format.json_schema.schema")  # type: ignore[arg-type]


def test_deeply_nested_schemas_are_refused_not_a_crash() -> None:
    from upcoach.errors import InvalidRequest
    from upcoach.llm.structured import check_schema

    schema: dict[str, object] = {"type": "string"}
    for _ in range(500):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequest, match="nests"):
        check_schema(schema, "x")
