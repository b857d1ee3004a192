"""Structured output and tool calls: how the local model is made to follow them, and how any answer is checked.

Inside the service a tool call travels as text in the Qwen/Hermes format that Qwen2.5's chat template defines
(``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``), in assistant messages and in answers alike:
the guard, PII redaction and its rehydration, the leak watch and the audit trail then see tool arguments like any
other text, with no second path. The OpenAI adapter (llm/openai_compat.py) converts to and from OpenAI's
structured ``tool_calls``; the API (api/openai_output.py) returns them to the caller.

For the local engine ``for_local`` turns a request's ``response_format`` / ``tools`` into what it honours: a GBNF
grammar (llama.cpp's JSON-schema converter for the JSON parts) and the tool signatures in the system prompt, worded
as the chat template words them. ``check_answer`` validates a finished answer (local or cloud) against the schema
with jsonschema: the grammar makes the local one parse, the check catches a cloud that ignored the schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import jsonschema
import referencing.exceptions

from upcoach.errors import InvalidOutput, InvalidRequest
from upcoach.llm.base import ChatMessage, ChatRequest, Function, ResponseFormat, Tools

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)

# The tool block of Qwen2.5's chat template (tokenizer.chat_template in its GGUF), word for word.
_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI's ``function.arguments`` carries it


def call_text(name: str, arguments: str | dict[str, Any]) -> str:
    """One tool call in the template's format (``arguments`` a JSON text or an object)."""
    args = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else arguments or {}
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def parse_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """(content, tool calls) of an answer: the text before the first call is its content (None when empty)."""
    if OPEN not in text:
        return text, []
    content = text[: text.index(OPEN)].strip() or None
    calls: list[ToolCall] = []
    for block in _CALL.findall(text):
        try:
            data = json.loads(block)
        except json.JSONDecodeError as exc:
            raise InvalidOutput(f"a tool call is not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise InvalidOutput("a tool call has no function name")
        arguments = data.get("arguments") or {}
        if isinstance(arguments, str):  # some servers send the arguments as a JSON text
            arguments = json.loads(arguments or "{}")
        calls.append(ToolCall(data["name"], json.dumps(arguments, ensure_ascii=False)))
    return content, calls


class CallSplitter:
    """Streams an answer apart into content and complete tool calls, as the text arrives.

    Text that may still become ``<tool_call>`` is held back until it is clear; once the answer is tool calls, each
    call is handed over when its closing tag arrives.
    """

    def __init__(self, active: bool) -> None:
        self._active = active
        self._calls: bool | None = None if active else False
        self._held = ""

    def feed(self, piece: str) -> Iterator[str | ToolCall]:
        if self._calls is False:
            if self._active and OPEN in piece:  # a cloud's prose and then calls (the adapter sends them whole)
                prose, _, rest = piece.partition(OPEN)
                if prose.strip():
                    yield prose
                self._calls, piece = True, OPEN + rest
            elif piece:
                yield piece
                return
            else:
                return
        self._held += piece
        if self._calls is None:
            start = self._held.lstrip()
            if not start or OPEN.startswith(start):
                return
            self._calls = start.startswith(OPEN)
            if not self._calls:
                held, self._held = self._held, ""
                yield held
                return
        while CLOSE in self._held:
            block, self._held = self._held.split(CLOSE, 1)
            _, calls = parse_calls(block.lstrip() + CLOSE)
            yield from calls

    def flush(self) -> Iterator[str | ToolCall]:
        held, self._held = self._held, ""
        if not self._calls and held:
            yield held


def check_answer(text: str, response_format: ResponseFormat | None, tools: Tools | None) -> list[ToolCall]:
    """The answer's tool calls, after checking it follows what was asked; ``InvalidOutput`` when it does not."""
    tools = tools if tools is not None and tools.active else None
    content, calls = parse_calls(text) if tools is not None else (text, [])
    if calls and response_format is not None:
        content = None  # the JSON answer and the calls are alternatives; prose next to calls is not checked
    if tools is not None:
        by_name = {f.name: f for f in tools.functions}
        if tools.choice != "auto" and not calls:
            raise InvalidOutput("a tool call was required and the answer has none")
        if not tools.parallel and len(calls) > 1:
            raise InvalidOutput(f"one tool call was allowed and the answer has {len(calls)}")
        for call in calls:
            function = by_name.get(call.name)
            if function is None or tools.choice not in ("auto", "required", call.name):
                raise InvalidOutput(f"the answer calls {call.name!r}, which is not a function it may call")
            _validate(json.loads(call.arguments), function.parameters, f"the arguments of {call.name!r}")
    if response_format is not None and content is not None:
        try:
            value = json.loads(content)
        except json.JSONDecodeError as exc:
            raise InvalidOutput(f"the answer is not valid JSON: {exc.msg}") from None
        if response_format.type == "json_object" and not isinstance(value, dict):
            raise InvalidOutput("the answer is JSON but not an object")
        if response_format.schema is not None:
            _validate(value, response_format.schema, "the answer")
    return calls


def _validate(value: object, schema: dict[str, Any], what: str) -> None:
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:  # a "#/..." pointing nowhere: the schema, not the answer
        raise InvalidRequest(f"the schema has a reference that resolves to nothing: {exc}") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise InvalidOutput(f"{what} does not follow the schema at {where}: {error.message}")


# What a schema may ask for before the grammar built from it grows too big to build: llama.cpp expands a bounded
# repetition (x{0,N}) into N rules, so one {"maxLength": 10**9} would exhaust the server's memory.
MAX_REPEAT = 512
MAX_DEPTH = 48
_BOUNDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def check_schema(schema: dict[str, Any], param: str) -> None:
    """A caller's JSON schema must be one, self-contained and small enough to enforce (400 naming ``param``).

    Only references inside the schema (``#...``) are allowed: llama.cpp's converter fetches ``https://`` ones with
    ``requests``, which would let any caller make this server fetch a URL of their choosing.
    """
    for key, value in _walk(schema, param):
        if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            raise InvalidRequest(f"$ref {value!r}: only references inside the schema (#...) are allowed", param=param)
        if key in _BOUNDS and isinstance(value, int) and value > MAX_REPEAT:
            raise InvalidRequest(f"{key} {value} is more than the {MAX_REPEAT} we can enforce", param=param)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise InvalidRequest(f"not a valid JSON schema: {exc.message}", param=param) from None


def _walk(node: object, param: str, depth: int = 0) -> Iterator[tuple[str, object]]:
    """Every (key, value) in a JSON document, depth-first; deeper than MAX_DEPTH is a 400."""
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"the schema nests deeper than {MAX_DEPTH} levels", param=param)
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value, param, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, param, depth + 1)


# ---- the local engine ----------------------------------------------------------------------------------------
def keeps_format(response_format: ResponseFormat | None, tools: Tools | None) -> bool:
    """Whether the answer must keep a machine-read shape (JSON, tool calls): nothing may be added to its text."""
    return response_format is not None or (tools is not None and tools.active)


def for_local(chat: ChatRequest) -> ChatRequest:
    """``chat`` as the local engine runs it: tool signatures and the JSON instruction in the system prompt, and a
    grammar the answer must follow. Requests without structure are returned as they are."""
    if chat.tools is not None and not chat.tools.active:  # tool_choice "none": the model sees no tools
        chat = replace(chat, tools=None)
    if chat.response_format is None and chat.tools is None:
        return chat
    notes: list[str] = []
    grammar_rules: list[str] = []
    alternatives: list[str] = []
    if chat.tools is not None:
        notes.append(_tools_prompt(chat.tools.functions))
        grammar_rules.append(_prefixed(_calls_json_grammar(chat.tools), "call"))
        call = f'"{OPEN}\\n" call-root "\\n{CLOSE}"'
        alternatives.append(f'{call} ("\\n" {call})*' if chat.tools.parallel else call)
    if chat.tools is None or chat.tools.choice == "auto":
        if chat.response_format is not None:
            notes.append(_format_prompt(chat.response_format))
            grammar_rules.append(_prefixed(_json_grammar(chat.response_format), "answer"))
            alternatives.append("answer-root")
        else:
            # Prose, which must not start the way a tool call does (it would be half a call).
            alternatives.append("[^< \\t\\n] .*")
    grammar = "root ::= " + " | ".join(f"({a})" for a in alternatives) + "\n" + "\n".join(grammar_rules)
    return replace(chat, messages=_with_system_note(chat.messages, "\n\n".join(notes)), grammar=grammar)


def _with_system_note(messages: tuple[ChatMessage, ...], note: str) -> tuple[ChatMessage, ...]:
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        return (replace(first, content=f"{first.content}\n\n{note}"), *messages[1:])
    return (ChatMessage("system", note), *messages)


def _tools_prompt(functions: tuple[Function, ...]) -> str:
    lines = [json.dumps({"type": "function", "function": _signature(f)}, ensure_ascii=False) for f in functions]
    return _TOOLS_HEAD + "".join("\n" + line for line in lines) + _TOOLS_TAIL


def _signature(function: Function) -> dict[str, Any]:
    return {"name": function.name, "description": function.description, "parameters": function.parameters}


def _format_prompt(response_format: ResponseFormat) -> str:
    if response_format.schema is None:
        return "Answer with one JSON object and nothing else."
    schema = json.dumps(response_format.schema, ensure_ascii=False)
    return f"Answer with one JSON object and nothing else, following this JSON schema:\n{schema}"


def _json_grammar(response_format: ResponseFormat) -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    if response_format.schema is None:
        return JSON_GBNF
    return _schema_grammar(response_format.schema, None, "response_format.json_schema.schema")


def _calls_json_grammar(tools: Tools) -> str:
    functions = [f for f in tools.functions if tools.choice in ("auto", "required", f.name)]
    objects = [
        {
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": f.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
        }
        for f in functions
    ]
    schema = objects[0] if len(objects) == 1 else {"oneOf": objects}
    return _schema_grammar(schema, ["name", "arguments"], "tools")


def _schema_grammar(schema: dict[str, Any], order: list[str] | None, param: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema), prop_order=order)
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors for what it cannot express
        raise InvalidRequest(f"this JSON schema cannot be enforced on the local model: {exc}", param=param) from None


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|[A-Za-z0-9_-]+|.', re.DOTALL)
_DEFINED = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*::=", re.MULTILINE)


def _prefixed(grammar: str, prefix: str) -> str:
    """``grammar`` with every rule renamed ``prefix-name``, so several converted grammars fit in one. Literals,
    character classes and comments are left alone (a property called "string" next to a rule called string)."""
    names = set(_DEFINED.findall(grammar))
    return "".join(
        f"{prefix}-{token}" if token in names else token for token in (m.group(0) for m in _TOKEN.finditer(grammar))
    )
