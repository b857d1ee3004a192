"""The app's Redis client (storage/batched_redis.py, built by app._redis): concurrent requests' commands share
round trips, and each caller still gets exactly its own reply or error, against the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.conftest import free_port
from upcoach.app import _redis
from upcoach.config import Settings
from upcoach.security.limits import TokenBucketLimiter
from upcoach.security.throttle import FailureThrottle
from upcoach.storage.batched_redis import BatchedRedis
from upcoach.storage.generation import Generation

REDIS_URL = "redis://127.0.0.1:6379"
REQUESTS = 1000


def app_client(tmp_path: Path, url: str = REDIS_URL) -> BatchedRedis:
    client = _redis(Settings(data_dir=tmp_path, load_model=False, redis_url=url))
    assert isinstance(client, BatchedRedis)
    return client


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[BatchedRedis]:
    shared = app_client(tmp_path)
    yield shared
    await shared.aclose()


async def test_a_thousand_concurrent_requests_share_round_trips_and_keep_their_own_answers(
    client: BatchedRedis,
) -> None:
    prefix = f"t:batch:{uuid.uuid4().hex}:"
    limiter = TokenBucketLimiter(rate_per_second=0.001, burst=3, redis=client, prefix=prefix + "limit:")
    keys = Generation(client, prefix + "keys")
    await keys.bump()

    async def request(i: int) -> tuple[int | None, bool]:
        # What a request does with Redis before it is routed: the key cache's counter, then its rate limit.
        generation = await keys.current()
        verdict = await limiter.take(f"caller-{i % 10}")
        return generation, verdict.allowed

    before = client.round_trips
    results = await asyncio.gather(*(request(i) for i in range(REQUESTS)))
    assert all(generation == 1 for generation, _ in results)
    # Every caller's bucket holds 3 tokens, however its takes were batched with the others'.
    allowed = [sum(ok for i, (_, ok) in enumerate(results) if i % 10 == caller) for caller in range(10)]
    assert allowed == [3] * 10
    # Two commands per request; sent one by one they would have taken 2,000 round trips (and connections).
    assert client.round_trips - before <= REQUESTS * 2 // 20, client.round_trips - before
    await client.delete(*[prefix + "keys", *(f"{prefix}limit:caller-{i}" for i in range(10))])


async def test_grouped_commands_of_a_thousand_requests_need_no_connection_each(client: BatchedRedis) -> None:
    # The refused-credential brake groups its commands in a pipeline; each used to check out a connection of its
    # own, and 1,000 of them ran the pool dry ("No connection available"), lifting the brake to in-process counts.
    throttle = FailureThrottle(attempts=3, window_seconds=60, redis=client, name=f"t-{uuid.uuid4().hex}")
    for _ in range(3):
        await throttle.failed("203.0.113.9")
    before, sent = client.round_trips, client.commands
    waits = await asyncio.gather(*(throttle.retry_after("203.0.113.9" if i % 2 else "198.51.100.1")
                                   for i in range(REQUESTS)))  # fmt: skip
    assert all(wait is not None and wait >= 1 for wait in waits[1::2]) and all(w is None for w in waits[::2])
    assert client.commands - sent == REQUESTS * 3  # every grouped command went through the shared batches
    assert client.round_trips - before <= REQUESTS * 3 // 20, client.round_trips - before


async def test_an_error_reply_reaches_only_its_own_caller(client: BatchedRedis) -> None:
    key = f"t:batch:{uuid.uuid4().hex}"
    await client.set(key, "text")
    failed, fine, counted = await asyncio.gather(
        client.incr(key), client.get(key), client.incr(key + ":n"), return_exceptions=True
    )
    assert isinstance(failed, ResponseError) and fine == b"text" and counted == 1
    await client.delete(key, key + ":n")


async def test_a_script_unknown_to_the_server_is_loaded_and_run_in_a_batch(client: BatchedRedis) -> None:
    # A body no server has seen: the first EVALSHA of every caller gets NOSCRIPT inside the batch.
    script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn ARGV[1]")
    replies = await asyncio.gather(*(script(keys=[], args=[i]) for i in range(20)))
    assert replies == [str(i).encode() for i in range(20)]


async def test_a_lost_connection_fails_every_command_of_the_batch(tmp_path: Path) -> None:
    nowhere = app_client(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    try:
        replies = await asyncio.gather(*(nowhere.get("k") for _ in range(5)), return_exceptions=True)
    finally:
        await nowhere.aclose()
    assert all(isinstance(reply, RedisConnectionError) for reply in replies), replies


async def test_blocking_commands_keep_a_connection_of_their_own(client: BatchedRedis) -> None:
    key = f"t:batch:{uuid.uuid4().hex}"
    waiting = asyncio.create_task(client.blpop([key], timeout=5))
    await asyncio.sleep(0.05)
    # Were BLPOP in a shared pipeline, this push would wait behind it for the whole timeout.
    assert await asyncio.wait_for(client.rpush(key, "x"), timeout=2) == 1
    assert await waiting == (key.encode(), b"x")
