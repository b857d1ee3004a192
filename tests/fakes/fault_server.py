"""An OpenAI-compatible fault server: a real HTTP peer on loopback whose behaviour each request chooses.

The request's ``model`` picks the behaviour, so one server covers every mode:

==================  ===============================================================================================
ok                  answers at once with ``ANSWER`` (streamed word by word, or whole), with usage
slow-first-token    starts the 200 response, then waits ``x-fault-delay`` seconds (default 5) before the first token
slow-stream         ``SLOW_STREAM_WORDS`` words, one every ``x-fault-delay`` seconds (default 0.2)
hang                never answers, not even headers, until the client goes away
error-500           500 with an OpenAI-shaped error body
error-400           400 "context length exceeded", as a peer with a smaller context answers
error-429           429 with ``Retry-After: 7``
drop-before-first   starts the 200 SSE response, then closes the connection before any token
drop-mid            sends 3 content chunks, then closes the connection without finish_reason or [DONE]
error-event         sends 1 content chunk, then an ``{"error": ...}`` event mid-stream, as some providers do
garbage             200 with a body that is not JSON (streamed: ``data:`` lines that are not JSON), as a broken proxy
truncated           streams 2 content chunks, then half of a third JSON line, then closes the connection
refuse              answers ``REFUSAL``: a small model's refusal of an ordinary question (the answer checks' fault)
code                answers ``CODE_ANSWER``: a script nobody asked for
loop                answers ``LOOP_ANSWER``: good first sentences, then the same sentence again and again
==================  ===============================================================================================

A model may end in ``@SECONDS`` to set the delay where no header can be sent (the app's cloud model setting):
``slow-first-token@0.5``. Any other model behaves like ``ok``; without ``stream`` every mode not listed as an error
answers like ``ok`` (after the delay of ``slow-first-token``). Header ``x-fault-usage: off`` leaves usage out, as
some servers do. ``POST /fault/down`` makes /v1/models and chat answer 503 until ``POST /fault/up``;
``GET /fault/health`` tells. ``force(mode)`` makes every chat request behave as ``mode`` whatever its model, until
``force(None)``: a fault injected into a running server's fixed model setting, and healed.

Every chat request body is recorded (``requests``, ``clear()``) so a test can prove exactly what reached the
peer; ``disconnects`` counts answers the client walked away from before their end.

Usage, from sync or async tests::

    with FaultServer() as server:          # or: async with FaultServer() as server
        client = AsyncOpenAI(base_url=server.url, api_key="unused")
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

ANSWER = "Small steady steps every day build habits that last longer than bursts of willpower."
SLOW_STREAM_WORDS = 100
MODES = (
    "ok",
    "slow-first-token",
    "slow-stream",
    "hang",
    "error-500",
    "error-400",
    "error-429",
    "drop-before-first",
    "drop-mid",
    "error-event",
    "refuse",
    "code",
    "loop",
    "garbage",
    "truncated",
)
# Answers a small local model gives now and then (issue 15), on demand: the answer checks' faults.
REFUSAL = "I'm sorry, I can't assist with that."
CODE_ANSWER = "Here is a script for that:\n```python\nimport os\nos.system('adb shell settings put global')\n```"
LOOP_ANSWER = (
    "Keep a water bottle on your desk. Drink a glass of water with every meal. Set a reminder to drink water. "
    "Set a reminder to drink water. Set a reminder to drink water."
)
ANSWERS = {"refuse": REFUSAL, "code": CODE_ANSWER, "loop": LOOP_ANSWER}
CONTEXT_ERROR = "This model's maximum context length is 2048 tokens. However, you requested 5000 tokens."


def answer_pieces(answer: str = ANSWER) -> list[str]:
    """The content chunks of ``ok``: one word each, spaces kept, so joining them gives ``ANSWER``."""
    words = answer.split(" ")
    return [word + " " for word in words[:-1]] + [words[-1]]


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The server's own (deterministic) prompt token count: words plus 3 per message, like chat templates add."""
    return sum(len(str(m.get("content", "")).split()) + 3 for m in messages)


class _Drop(Exception):
    """Raised inside a started response: uvicorn then closes the connection mid-body, as a crashed peer would."""


class FaultServer:
    """Runs the fault app with uvicorn on a free 127.0.0.1 port in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._disconnects = 0
        self._down = False
        self._forced: str | None = None
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.app = self._build_app()

    # ---- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        # Binding here (not inside uvicorn) means the port is ours before the thread starts: no race with others.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="critical", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fault-server-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fault server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FaultServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # ---- what the tests read and steer -----------------------------------------------------------------------
    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat request body received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._disconnects = 0

    @property
    def disconnects(self) -> int:
        with self._lock:
            return self._disconnects

    @property
    def is_down(self) -> bool:
        with self._lock:
            return self._down

    def force(self, mode: str | None) -> None:
        with self._lock:
            self._forced = mode

    def down(self) -> None:
        with self._lock:
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False

    # ---- the app ---------------------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> Response:
            if self.is_down:
                return _error(503, "fault server is down", "server_error")
            data = [{"id": mode, "object": "model", "created": 0, "owned_by": "fault"} for mode in MODES]
            return JSONResponse({"object": "list", "data": data})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self._requests.append(body)
            return await self._answer(request, body)

        @app.post("/fault/down")
        async def fault_down() -> dict[str, bool]:
            self.down()
            return {"down": True}

        @app.post("/fault/up")
        async def fault_up() -> dict[str, bool]:
            self.up()
            return {"down": False}

        @app.get("/fault/health")
        async def fault_health() -> dict[str, bool]:
            return {"down": self.is_down}

        return app

    async def _answer(self, request: Request, body: dict[str, Any]) -> Response:
        if self.is_down:
            return _error(503, "fault server is down", "server_error")
        mode, _, delay_suffix = str(self._forced or body.get("model", "ok")).partition("@")
        if mode == "garbage":
            if body.get("stream"):
                return StreamingResponse(iter(["data: <html>bad gateway\n\n", "data: }{\n\n"]),
                                         media_type="text/event-stream")  # fmt: skip
            return Response(b"<html><body>502 bad gateway</body></html>", media_type="application/json")
        if mode == "error-500":
            return _error(500, "fault server: internal error", "server_error")
        if mode == "error-400":
            return _error(400, CONTEXT_ERROR, "invalid_request_error", code="context_length_exceeded")
        if mode == "error-429":
            return _error(429, "fault server: rate limited", "rate_limit_error", headers={"Retry-After": "7"})
        if mode == "hang":
            await self._wait_for_disconnect(request)
            return Response(status_code=499)
        default_delay = 0.2 if mode == "slow-stream" else 5.0
        delay = float(delay_suffix or request.headers.get("x-fault-delay", default_delay))
        usage = request.headers.get("x-fault-usage", "on") != "off"
        messages = body.get("messages", [])
        if not body.get("stream"):
            if mode == "slow-first-token":
                await asyncio.sleep(delay)
            return JSONResponse(self._completion(mode, messages, usage))
        include_usage = usage and bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._sse(mode, messages, delay, include_usage), media_type="text/event-stream")

    async def _wait_for_disconnect(self, request: Request) -> None:
        while not self._stopping.is_set():
            if await request.is_disconnected():
                with self._lock:
                    self._disconnects += 1
                return
            await asyncio.sleep(0.02)

    def _completion(self, mode: str, messages: list[dict[str, Any]], usage: bool) -> dict[str, Any]:
        pieces = answer_pieces()
        result: dict[str, Any] = {
            "id": f"chatcmpl-fault-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": mode,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWERS.get(mode, ANSWER)},
                    "finish_reason": "stop",
                }
            ],
        }
        if usage:
            result["usage"] = _usage(prompt_tokens(messages), len(pieces))
        return result

    async def _sse(
        self, mode: str, messages: list[dict[str, Any]], delay: float, include_usage: bool
    ) -> AsyncIterator[str]:
        completion_id = f"chatcmpl-fault-{next(self._ids)}"

        def event(delta: dict[str, str], finish: str | None = None) -> str:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": mode,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(chunk)}\n\n"

        if mode == "slow-stream":
            pieces = [f"word{i} " for i in range(SLOW_STREAM_WORDS)]
        else:
            pieces = answer_pieces(ANSWERS.get(mode, ANSWER))
        try:
            # Real servers open with a role-only delta: it carries no token, so it must not count as the first one.
            yield event({"role": "assistant", "content": ""})
            if mode == "drop-before-first":
                await asyncio.sleep(0.05)  # let the headers and the role chunk reach the client first
                raise _Drop
            if mode == "slow-first-token":
                await asyncio.sleep(delay)
            for i, piece in enumerate(pieces):
                if mode == "error-event" and i == 1:
                    error = {"error": {"message": "overloaded mid-answer", "type": "server_error"}}
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                if mode == "truncated" and i == 2:
                    yield event({"content": piece})[:25]
                    await asyncio.sleep(0.05)
                    raise _Drop
                if mode == "drop-mid" and i == 3:
                    await asyncio.sleep(0.05)
                    raise _Drop
                if mode == "slow-stream" and i:
                    await asyncio.sleep(delay)
                yield event({"content": piece})
            yield event({}, "stop")
            if include_usage:
                usage_chunk = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": mode,
                    "choices": [],
                    "usage": _usage(prompt_tokens(messages), len(pieces)),
                }
                yield f"data: {json.dumps(usage_chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            # Starlette cancels the body iterator when uvicorn reports http.disconnect: the client went away.
            with self._lock:
                self._disconnects += 1
            raise


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _error(
    status: int, message: str, type_: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
