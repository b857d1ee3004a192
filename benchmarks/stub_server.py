"""An instant OpenAI-compatible upstream for the gateway benchmark: `python -m benchmarks.stub_server --port N`.

Raw ASGI on uvicorn (uvloop + httptools), no framework: every answer is a constant byte string built at import,
so what a gateway adds on top of this server is the gateway's own cost. Serves
- GET /v1/models;
- POST /v1/chat/completions, non-streaming (JSON with usage) and streaming (SSE; the usage chunk when
  ``stream_options.include_usage`` is set). The whole stream goes out in one write: the stub has nothing to wait
  for, and a gateway that forwards tokens still parses every SSE event.
Anything else is a 404. The answer text is fixed (ANSWER), so a load generator can check who answered.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

ANSWER = "Keep a full water bottle on your desk and sip whenever you open a new tab."
MODEL = "gpt-4o-mini"
COMPLETION_ID = "chatcmpl-stub"
CREATED = 1_700_000_000
USAGE = {"prompt_tokens": 14, "completion_tokens": 17, "total_tokens": 31}

Scope = dict[str, Any]
Message = dict[str, Any]


def _json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _sse(events: list[dict[str, object]]) -> bytes:
    return b"".join(b"data: " + _json(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


MODELS_BODY = _json(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "stub"}]}
)
COMPLETION_BODY = _json(
    {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)
# Three content pieces rather than one, so a forwarding gateway does the per-token work of a real stream.
_WORDS = ANSWER.split(" ")
_PIECES = [" ".join(_WORDS[:5]), " " + " ".join(_WORDS[5:10]), " " + " ".join(_WORDS[10:])]
FIRST_PIECE = _PIECES[0]  # what a client waits for to see the streamed answer's first token
_STREAM_EVENTS = [
    _chunk({"role": "assistant", "content": ""}),
    *(_chunk({"content": piece}) for piece in _PIECES),
    _chunk({}, finish="stop"),
]
STREAM_BODY = _sse(_STREAM_EVENTS)
STREAM_WITH_USAGE_BODY = _sse([*_STREAM_EVENTS, {**_chunk({}), "choices": [], "usage": USAGE}])
NOT_FOUND_BODY = _json(
    {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}}
)
BAD_REQUEST_BODY = _json(
    {"error": {"message": "body is not JSON", "type": "invalid_request_error", "param": None, "code": None}}
)

_JSON_TYPE = (b"content-type", b"application/json")
_SSE_TYPE = (b"content-type", b"text/event-stream")


async def _send(send: Any, status: int, content_type: tuple[bytes, bytes], body: bytes) -> None:
    headers = [content_type, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    first = await receive()
    body: bytes = first.get("body", b"")
    if not first.get("more_body"):
        return body  # the usual case: a small request arrives in one message
    parts = [body]
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/v1/chat/completions" and method == "POST":
        try:
            request = json.loads(await _read_body(receive))
        except ValueError:
            await _send(send, 400, _JSON_TYPE, BAD_REQUEST_BODY)
            return
        if request.get("stream"):
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            await _send(send, 200, _SSE_TYPE, STREAM_WITH_USAGE_BODY if usage else STREAM_BODY)
        else:
            await _send(send, 200, _JSON_TYPE, COMPLETION_BODY)
    elif path == "/v1/models" and method == "GET":
        await _send(send, 200, _JSON_TYPE, MODELS_BODY)
    else:
        await _send(send, 404, _JSON_TYPE, NOT_FOUND_BODY)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # 1,000 clients connect at once at the start of a run: keep the accept queue longer than that.
        backlog=4096,
    )


if __name__ == "__main__":
    main()
