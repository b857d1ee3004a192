"""Token-bucket rate limits, in process and shared through the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from upcoach.security.limits import TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_client():  # type: ignore[no-untyped-def]
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


@pytest.mark.parametrize("shared", [False, True])
async def test_burst_then_refill(shared: bool, redis_client: aioredis.Redis) -> None:
    clock = Clock()
    prefix = f"upcoach:test:rl:{uuid.uuid4().hex}:"
    limiter = TokenBucketLimiter(2.0, 3, redis_client if shared else None, prefix=prefix, clock=clock)
    assert [(await limiter.take("k")).allowed for _ in range(4)] == [True, True, True, False]
    refused = await limiter.take("k")
    assert not refused.allowed and refused.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert (await limiter.take("k")).allowed
    assert (await limiter.take("other-key")).allowed  # buckets are per key
    clock.now += 100
    assert [(await limiter.take("k")).allowed for _ in range(4)] == [True, True, True, False]  # capped at burst
    if shared:
        await redis_client.delete(prefix + "k", prefix + "other-key")


async def test_two_workers_share_one_bucket_through_redis(redis_client: aioredis.Redis) -> None:
    prefix = f"upcoach:test:rl:{uuid.uuid4().hex}:"
    second = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    clock = Clock()
    try:
        workers = [
            TokenBucketLimiter(0.001, 10, client, prefix=prefix, clock=clock) for client in (redis_client, second)
        ]
        verdicts = await asyncio.gather(*(workers[i % 2].take("user-1") for i in range(30)))
        assert sum(v.allowed for v in verdicts) == 10
    finally:
        await redis_client.delete(prefix + "user-1")
        await second.aclose()


async def test_redis_outage_falls_back_to_local_limits() -> None:
    broken = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = TokenBucketLimiter(1.0, 2, broken, clock=Clock())
    results = [(await limiter.take("k")).allowed for _ in range(3)]
    assert results == [True, True, False]
    await broken.aclose()


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucketLimiter(0, 1)
