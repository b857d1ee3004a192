"""The outermost HTTP layer of observability: a request id for every request, and responses counted by status.

Pure ASGI (no BaseHTTPMiddleware): streaming answers pass through untouched, and the request id set here is the one
every log line written while serving the request carries (observability/logs.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from upcoach.observability import tracing
from upcoach.observability.logs import request_id_from, request_id_var

REQUEST_ID_HEADER = b"x-request-id"
access_log = logging.getLogger("upcoach.access")


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/models/{model_id}``), never the raw path: bounded label values."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER)
        request_id = request_id_from(header.decode("latin-1") if header else None)
        token = request_id_var.set(request_id)
        status = 500  # an exception that escapes before a response started is what the server answers
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        method = scope.get("method", "")
        try:
            with tracing.server_span(method) as span:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    tracing.finish_server_span(span, method, _route_template(scope), status, request_id)
        finally:
            _count(scope, status)
            if access_log.isEnabledFor(logging.INFO):
                # Method, route template and status only (never the raw path or query): safe for the JSON format.
                access_log.info(
                    "%s %s %d %.1fms", method, _route_template(scope), status,
                    (time.perf_counter() - started) * 1000, extra={"safe_args": True},
                )  # fmt: skip
            request_id_var.reset(token)


def _count(scope: Scope, status: int) -> None:
    services: Any = getattr(scope["app"].state, "services", None) if "app" in scope else None
    metrics = getattr(services, "metrics", None)
    if metrics is not None:
        metrics.http_responses.labels(
            method=scope.get("method", ""), route=_route_template(scope), status=str(status)
        ).inc()
