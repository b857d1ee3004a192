"""Dashboard sessions and the failure brake in the real Redis: two stores stand for two workers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio

from tests.conftest import free_port
from upcoach.security.auth import Principal
from upcoach.security.keys import Role
from upcoach.security.throttle import FailureThrottle
from upcoach.web.sessions import SessionStore

REDIS_URL = "redis://127.0.0.1:6379"
ALICE = Principal("alice", Role.user, "0123456789abcdef", "api_key")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def shared() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


async def test_a_session_opened_on_one_worker_lives_and_ends_on_the_other(shared: redis.asyncio.Redis) -> None:
    clock = Clock()
    one = SessionStore(ttl_seconds=600, idle_seconds=60, clock=clock, redis=shared)
    other = SessionStore(ttl_seconds=600, idle_seconds=60, clock=clock, redis=shared)
    session = await one.create(ALICE)
    seen = await other.get(session.id)
    assert seen is not None and seen.principal == ALICE and seen.csrf_token == session.csrf_token
    # Nothing in Redis names the session: whoever reads it cannot present a cookie.
    assert await shared.exists(f"upcoach:session:{session.id}") == 0
    clock.now += 59
    assert await one.get(session.id) is not None  # used on the other worker: not idle
    await other.revoke(session.id)
    assert await one.get(session.id) is None


async def test_an_idle_session_ends_everywhere(shared: redis.asyncio.Redis) -> None:
    clock = Clock()
    one = SessionStore(ttl_seconds=600, idle_seconds=60, clock=clock, redis=shared)
    session = await one.create(ALICE)
    clock.now += 61
    assert await SessionStore(ttl_seconds=600, idle_seconds=60, clock=clock, redis=shared).get(session.id) is None


async def test_an_unreachable_session_store_signs_out() -> None:
    down = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)
    store = SessionStore(ttl_seconds=600, idle_seconds=60, redis=down)
    assert await store.get("anything") is None
    await down.aclose()


async def test_failures_on_one_worker_count_on_the_other(shared: redis.asyncio.Redis) -> None:
    name = f"test-{uuid.uuid4().hex}"
    clock = Clock()
    one = FailureThrottle(attempts=3, window_seconds=60, clock=clock, redis=shared, name=name)
    other = FailureThrottle(attempts=3, window_seconds=60, clock=clock, redis=shared, name=name)
    await one.failed("192.0.2.7")
    await other.failed("192.0.2.7")
    assert await one.retry_after("192.0.2.7") is None
    await one.failed("192.0.2.7")
    assert await other.retry_after("192.0.2.7") == pytest.approx(60)
    assert await other.retry_after("192.0.2.8") is None
    clock.now += 61
    assert await one.retry_after("192.0.2.7") is None
