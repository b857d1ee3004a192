"""The one place where exceptions become HTTP answers, always in OpenAI's error shape:
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as DatabasePoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from upcoach.errors import Overloaded, UpcoachError
from upcoach.storage.database import transient

log = logging.getLogger(__name__)

UNAVAILABLE_RETRY_AFTER = 2  # seconds: a restarting database or a model being loaded is back in about that time

_HTTP_CODES = {
    400: ("invalid_request", "invalid_request_error"),
    401: ("unauthorized", "authentication_error"),
    403: ("forbidden", "permission_error"),
    404: ("not_found", "invalid_request_error"),
    405: ("method_not_allowed", "invalid_request_error"),
    413: ("payload_too_large", "invalid_request_error"),
    415: ("unsupported_media_type", "invalid_request_error"),
    429: ("rate_limited", "rate_limit_error"),
    503: ("unavailable", "server_error"),
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorOut(BaseModel):
    """Every error answer: ``code`` is the machine-readable reason (src/upcoach/errors.py)."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "invalid request",
    401: "missing, invalid or revoked credentials",
    403: "the caller's role may not do this",
    404: "not found",
    409: "conflicts with the current state",
    413: "body too large",
    422: "the request cannot be processed as sent",
    429: "rate limited: retry after Retry-After seconds",
    503: "unavailable now: retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The ``responses=`` of a route: its error answers, in the one error shape."""
    return {status: {"model": ErrorOut, "description": _DESCRIPTIONS.get(status, "error")} for status in statuses}


def error_body(message: str, *, type_: str, code: str, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    code: str,
    type_: str,
    param: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse(error_body(message, type_=type_, code=code, param=param), status_code=status, headers=headers)


def _field(loc: tuple[object, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _on_upcoach_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UpcoachError)
    if exc.status >= 500 and exc.status != 503:
        log.error("%s: %s", exc.code, exc.message)
    # Every 503 is a deliberate "not now": it says when to come back, so clients and load balancers retry.
    retry_after = exc.retry_after if exc.retry_after is not None or exc.status != 503 else UNAVAILABLE_RETRY_AFTER
    response = error_response(
        exc.status, exc.message, code=exc.code, type_=exc.type, param=exc.param, retry_after=retry_after
    )
    response.headers.update(getattr(exc, "headers", None) or {})
    return response


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    if first.get("type") == "json_invalid":
        return error_response(
            400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
            code="invalid_json", type_="invalid_request_error",
        )  # fmt: skip
    param = _field(tuple(first.get("loc", ())))
    kind = str(first.get("type"))
    unknown_openai_field = kind == "extra_forbidden" and request.url.path.startswith(OPENAI_PREFIX)
    code = "unsupported_parameter" if kind == "unsupported_parameter" or unknown_openai_field else "invalid_request"
    text = "this field is not supported" if unknown_openai_field else first["msg"]
    message = f"{param}: {text}" if param else str(text)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_response(400, message, code=code, type_="invalid_request_error", param=param)


# On the OpenAI API a field nobody declared is "unsupported_parameter", as OpenAI's own clients expect (a field or
# value we refuse on purpose is that everywhere, api/openai_schemas.py); elsewhere it stays "invalid_request".
OPENAI_PREFIX = "/v1/"


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, type_ = _HTTP_CODES.get(exc.status_code, ("http_error", "invalid_request_error"))
    response = error_response(exc.status_code, str(exc.detail), code=code, type_=type_)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The database's own troubles (it went away, its pool is spent) answered as what they are, anything else a 500.

    Installed for the database's errors (``DBAPIError``, and ``ConnectionError``: a pooled connection's checkout can
    raise the socket's own reset, which SQLAlchemy does not wrap) as well as for every exception: a route's error
    handled by its own type keeps the keep-alive connection, where Starlette re-raises what reaches the catch-all
    after answering and uvicorn then closes the connection under the client's next request. The catch-all still
    sees them when they come from a middleware (the API key check), where route-level handlers do not reach."""
    if isinstance(exc, DatabasePoolTimeout):
        # Every database connection stayed in use for the pool's whole wait: a burst beyond what the database takes,
        # answered like any other overload (429 with Retry-After), not as a fault.
        log.warning("database connection pool exhausted: request refused as overloaded")
        busy = Overloaded("the server is busy: every database connection is in use; try again shortly", retry_after=1)
        return await _on_upcoach_error(request, busy)
    if isinstance(exc, DBAPIError | ConnectionError) and transient(exc):
        # The database went away under the request (restart, failover): unavailable now, not a bug.
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(503, "storage is unavailable now; retry shortly", code="storage_unavailable",
                              type_="server_error", retry_after=UNAVAILABLE_RETRY_AFTER)  # fmt: skip
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error", code="internal_error", type_="server_error")


# Answers any route can give (bad input, credentials, role, reused Idempotency-Key, rate limit, unavailable), declared
# in the one error shape; FastAPI's own 422 validation schema would be wrong: validation errors answer 400.
COMMON_ERRORS = (400, 401, 403, 422, 429, 503)


def install(app: FastAPI) -> None:
    """Map errors to answers, and declare them in the spec of every route included after this call."""
    app.router.responses = {**error_responses(*COMMON_ERRORS), **app.router.responses}
    app.add_exception_handler(UpcoachError, _on_upcoach_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    for kind in (DBAPIError, ConnectionError, Exception):
        app.add_exception_handler(kind, _on_unexpected)
