"""A database whose connections are all in use (SQLAlchemy's pool wait ran out) is an overload, answered 429 with
Retry-After like any other (api/errors.py), also when it happens in a middleware such as the API key check. The
pool's wait is 30 s, too long to exhaust it for real in a test, so the pool's own error is raised where it would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import TimeoutError as DatabasePoolTimeout

from upcoach.api import errors as api_errors

POOL_TEXT = "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"


def app_raising(error: Callable[[], Exception], where: str) -> FastAPI:
    """An app whose API key check (a middleware) or route meets the database's ``error``."""
    app = FastAPI()
    api_errors.install(app)

    @app.middleware("http")
    async def check_key(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if where == "middleware":
            raise error()
        return await call_next(request)

    @app.post("/work")
    async def work() -> dict[str, str]:
        raise error()

    return app


def pool_spent() -> Exception:
    return DatabasePoolTimeout(POOL_TEXT)


def connection_reset() -> Exception:
    """The database restarted: checking a pooled connection out meets the socket's own reset, unwrapped (seen in
    tests/faults' PostgreSQL restart, on a journal post)."""
    return ConnectionResetError(104, "Connection reset by peer")


async def test_an_exhausted_database_pool_is_a_429_with_retry_after_in_a_route_and_in_a_middleware() -> None:
    for where in ("middleware", "route"):
        transport = httpx.ASGITransport(app=app_raising(pool_spent, where), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/work")
        assert response.status_code == 429, (where, response.text)
        assert response.headers["Retry-After"] == "1"
        error = response.json()["error"]
        assert error["code"] == "queue_full" and "QueuePool" not in error["message"]


async def test_a_database_connection_reset_is_a_503_with_retry_after_not_a_500() -> None:
    for where in ("middleware", "route"):
        transport = httpx.ASGITransport(app=app_raising(connection_reset, where), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/work")
        assert response.status_code == 503, (where, response.text)
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "storage_unavailable"
