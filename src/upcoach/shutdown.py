"""Graceful shutdown: SIGTERM drains the server instead of cutting it off (docs/reliability.md).

At the first SIGTERM (or SIGINT) ``Drain.begin`` runs: ``/readyz`` answers 503 at once so a load balancer stops
sending, and uvicorn stops accepting connections. Requests and streams already running get ``shutdown_grace``
seconds to finish. At that deadline ``DrainRequests`` ends what is still running itself, in the client's format:
a stream that has started gets a last SSE error event (code ``shutting_down``) and a proper end of body, not a cut
socket; a request that has not answered yet gets a 503 with ``Retry-After``. The cancelled request still writes its
record (routing/engine.py records cancellations), and the lifespan's exit flushes the record writer and the audit
writers before the process ends with status 0.

uvicorn owns the signal handlers (``Server.capture_signals``); ``Drain.listen`` chains ours in front of them for the
lifespan's duration, which works the same in the single process and in each of ``serve --workers N``'s workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
SHUTTING_DOWN = "shutting_down"
# Seconds a refused caller is asked to wait: long enough for an orchestrator to have started a replacement.
RETRY_AFTER_SECONDS = 5
# uvicorn's own backstop after our deadline: it cancels whatever is left (only a request ignoring cancellation).
UVICORN_MARGIN_SECONDS = 5.0


def _error(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": SHUTTING_DOWN}}


# The last event of a stream cut at the deadline, per API: the OpenAI API's error chunk and [DONE] (what its SDKs
# raise as APIError), and the plan API's named error event (api/hybrid_routes.py).
def _openai_end(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\ndata: [DONE]\n\n"


def _named_end(payload: bytes) -> bytes:
    return b"event: error\ndata: " + payload + b"\n\n"


STREAM_ENDINGS = (("/v1/", _openai_end), ("/", _named_end))


class Drain:
    """This process's shutdown state: ``draining`` from the first signal, ``past_deadline`` ``grace`` s later,
    when the requests still running (``running``: their tasks) are cancelled to be ended by ``DrainRequests``."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self.past_deadline = False
        self.began_at: float | None = None
        self.running: set[asyncio.Task[Any]] = set()
        self.cut: set[asyncio.Task[Any]] = set()

    def begin(self) -> None:
        """Start draining (idempotent); called again while draining, the deadline is now (a second Ctrl-C)."""
        if self.draining:
            self._expire()
            return
        self.draining, self.began_at = True, time.monotonic()
        log.info("shutting down: not ready, running requests get %.0f s to finish", self.grace)
        asyncio.get_running_loop().call_later(self.grace, self._expire)

    def _expire(self) -> None:
        if self.past_deadline:
            return
        self.past_deadline = True
        if self.running:
            log.warning("shutdown grace over: ending %d running requests", len(self.running))
        for task in self.running:
            self.cut.add(task)
            task.cancel(SHUTTING_DOWN)

    @contextlib.contextmanager
    def listen(self) -> Iterator[None]:
        """Begin at SIGTERM/SIGINT, then let the handler that was there (uvicorn's) stop the server."""
        # Fresh state on this loop: an app may be started more than once (test clients), each time on a new loop.
        self.draining, self.past_deadline, self.began_at = False, False, None
        self.running, self.cut = set(), set()
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach the main thread only (in-process test clients run the app elsewhere)
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in DRAIN_SIGNALS}

        def handler(sig: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            chained = previous[sig]
            if callable(chained):
                chained(sig, frame)

        for sig in DRAIN_SIGNALS:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, chained in previous.items():
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, chained)


class _Progress:
    def __init__(self) -> None:
        self.started = False
        self.stream = False
        self.ended = False

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict(message.get("headers") or [])
            self.stream = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True


class DrainRequests:
    """ASGI middleware: once the drain's deadline passes, end each running request in its own format."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        progress = _Progress()

        async def tracked(message: Message) -> None:
            if progress.ended:
                return  # the deadline already ended this response; the app's late writes go nowhere
            progress.see(message)
            await send(message)

        if self.drain.past_deadline:
            await self._end(scope, progress, send)
            return
        # No task of its own per request: the drain cancels this one at the deadline, and only that is caught here.
        task = asyncio.current_task()
        assert task is not None
        self.drain.running.add(task)
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if task not in self.drain.cut:
                raise
            task.uncancel()
            if not progress.ended:
                await self._end(scope, progress, send)
        finally:
            self.drain.running.discard(task)
            self.drain.cut.discard(task)

    async def _end(self, scope: Scope, progress: _Progress, send: Send) -> None:
        progress.ended = True
        message = "the server is shutting down: retry on another instance"
        payload = json.dumps(_error(message), separators=(",", ":")).encode()
        if progress.stream:
            ending = next(end for prefix, end in STREAM_ENDINGS if str(scope.get("path", "")).startswith(prefix))
            await send({"type": "http.response.body", "body": ending(payload), "more_body": False})
        elif not progress.started:
            headers = [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                       (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]  # fmt: skip
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": payload, "more_body": False})
        else:
            # A plain body already half sent cannot be amended: ending it short is all that is left.
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class GracefulServer(uvicorn.Server):
    """uvicorn's server, exiting 0 after a drain: uvicorn re-raises the signal it handled once it has shut down
    (so the process would die of SIGTERM, status 143); a completed graceful stop is a success, not a kill."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)


def graceful_timeout(grace: float) -> float:
    """uvicorn's ``timeout_graceful_shutdown``: after ours, so the drain ends requests before uvicorn cancels them."""
    return grace + UVICORN_MARGIN_SECONDS
