"""Circuit breakers against both stores; shared state and fail-safe against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import redis.asyncio

from tests.conftest import free_port
from upcoach.config import Settings
from upcoach.routing.breaker import (
    REDIS_RETRY_SECONDS,
    BreakerConfig,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    MemoryBreakerStore,
    RedisBreakerStore,
    breaker_config_from_settings,
)

REDIS_URL = "redis://127.0.0.1:6379"
CONFIG = BreakerConfig(failure_rate=0.5, window_seconds=30.0, min_requests=4, cooldown_seconds=15.0)

ClientFactory = Callable[[str], redis.asyncio.Redis]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prefix() -> str:
    return f"test:upcoach:breaker:{uuid.uuid4().hex}:"


# Function loop scope: a redis client must live on the loop of the test that uses it.
@pytest_asyncio.fixture
async def make_client(prefix: str) -> AsyncIterator[ClientFactory]:
    clients: list[redis.asyncio.Redis] = []

    def make(url: str = REDIS_URL) -> redis.asyncio.Redis:
        # Blocking pool, as the store's docstring advises: bursts queue for a connection instead of failing over.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=20, timeout=2, socket_timeout=2, socket_connect_timeout=2
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        clients.append(client)
        return client

    yield make
    cleaner = make()
    keys = [key async for key in cleaner.scan_iter(match=prefix + "*")]
    if keys:
        await cleaner.delete(*keys)
    for client in clients:
        await client.aclose(close_connection_pool=True)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, make_client: ClientFactory, prefix: str) -> BreakerStore:
    if request.param == "memory":
        return MemoryBreakerStore()
    return RedisBreakerStore(make_client(REDIS_URL), prefix=prefix)


def breaker(store: BreakerStore, clock: FakeClock, config: BreakerConfig = CONFIG) -> CircuitBreaker:
    return CircuitBreaker("cloud", config, store, clock=clock)


async def record(b: CircuitBreaker, *, failures: int = 0, successes: int = 0) -> None:
    for _ in range(successes):
        await b.record_success()
    for _ in range(failures):
        await b.record_failure()


async def open_breaker(b: CircuitBreaker) -> None:
    await record(b, failures=CONFIG.min_requests)
    assert await b.state() is BreakerState.OPEN


async def test_new_breaker_is_closed_and_empty(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    assert await b.allow() is True
    assert await b.snapshot() == {"name": "cloud", "state": "closed", "failures": 0, "requests": 0, "opened_at": None}


async def test_stays_closed_under_min_requests(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await record(b, failures=3)
    assert await b.state() is BreakerState.CLOSED
    assert await b.allow() is True
    snap = await b.snapshot()
    assert (snap["failures"], snap["requests"]) == (3, 3)


async def test_opens_when_failure_rate_reached(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await record(b, successes=3, failures=1)
    assert await b.state() is BreakerState.CLOSED  # 1/4 < 0.5
    await b.record_failure()
    assert await b.state() is BreakerState.CLOSED  # 2/5 < 0.5
    clock.advance(0.5)
    await b.record_failure()  # 3/6 == 0.5
    assert await b.snapshot() == {
        "name": "cloud",
        "state": "open",
        "failures": 3,
        "requests": 6,
        "opened_at": clock.now,
    }


async def test_open_refuses_until_cooldown(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    assert [await b.allow() for _ in range(5)] == [False] * 5
    clock.advance(CONFIG.cooldown_seconds - 0.01)
    assert await b.allow() is False
    assert await b.state() is BreakerState.OPEN


async def test_records_while_open_are_ignored(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    opened_at = clock.now
    clock.advance(5)
    await record(b, successes=2, failures=2)
    snap = await b.snapshot()
    assert (snap["state"], snap["opened_at"], snap["requests"]) == ("open", opened_at, CONFIG.min_requests)


async def test_after_cooldown_exactly_one_probe(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    clock.advance(CONFIG.cooldown_seconds)
    assert await b.state() is BreakerState.HALF_OPEN  # reads half-open before anyone asks
    assert [await b.allow() for _ in range(5)] == [True, False, False, False, False]
    assert await b.state() is BreakerState.HALF_OPEN


async def test_half_open_admits_configured_probe_count(store: BreakerStore, clock: FakeClock) -> None:
    config = BreakerConfig(min_requests=2, cooldown_seconds=1.0, half_open_probes=3)
    b = breaker(store, clock, config)
    await record(b, failures=2)
    clock.advance(1.0)
    assert [await b.allow() for _ in range(5)] == [True, True, True, False, False]


async def test_probe_success_closes_with_empty_window(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    clock.advance(CONFIG.cooldown_seconds)
    assert await b.allow() is True
    await b.record_success()
    assert await b.snapshot() == {"name": "cloud", "state": "closed", "failures": 0, "requests": 0, "opened_at": None}
    assert [await b.allow() for _ in range(3)] == [True] * 3
    await record(b, failures=3)
    assert await b.state() is BreakerState.CLOSED  # the window really restarted: 3 < min_requests


async def test_probe_failure_reopens_with_fresh_cooldown(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    clock.advance(CONFIG.cooldown_seconds + 2)
    assert await b.allow() is True
    await b.record_failure()
    reopened_at = clock.now
    snap = await b.snapshot()
    assert (snap["state"], snap["opened_at"]) == ("open", reopened_at)
    clock.advance(CONFIG.cooldown_seconds - 0.1)
    assert await b.allow() is False
    clock.advance(0.1)
    assert await b.allow() is True
    assert await b.allow() is False


async def test_lost_probe_frees_its_slot_after_a_cooldown(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await open_breaker(b)
    clock.advance(CONFIG.cooldown_seconds)
    assert await b.allow() is True  # this probe never reports back
    clock.advance(CONFIG.cooldown_seconds - 1)
    assert await b.allow() is False
    clock.advance(1)
    assert await b.allow() is True
    assert await b.allow() is False


async def test_old_failures_fall_out_of_the_window(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await record(b, failures=3)
    clock.advance(CONFIG.window_seconds - 2)
    snap = await b.snapshot()
    assert (snap["failures"], snap["requests"]) == (3, 3)
    clock.advance(2)
    snap = await b.snapshot()
    assert (snap["failures"], snap["requests"]) == (0, 0)
    await record(b, successes=3, failures=1)  # with the old failures this would be 4/7 and open
    snap = await b.snapshot()
    assert (snap["state"], snap["failures"], snap["requests"]) == ("closed", 1, 4)


async def test_window_slides_rather_than_resets(store: BreakerStore, clock: FakeClock) -> None:
    b = breaker(store, clock)
    await record(b, failures=2)
    clock.advance(CONFIG.window_seconds / 2)
    await b.record_success()
    clock.advance(CONFIG.window_seconds / 2 + 1)  # the failures have left the window, the success has not
    snap = await b.snapshot()
    assert (snap["failures"], snap["requests"]) == (0, 1)
    await record(b, successes=1, failures=2)
    snap = await b.snapshot()
    assert (snap["state"], snap["failures"], snap["requests"]) == ("open", 2, 4)


async def test_breakers_are_independent_by_name(store: BreakerStore, clock: FakeClock) -> None:
    cloud = CircuitBreaker("cloud", CONFIG, store, clock=clock)
    pool = CircuitBreaker("pool", CONFIG, store, clock=clock)
    await open_breaker(cloud)
    assert await pool.state() is BreakerState.CLOSED
    assert await pool.allow() is True


async def test_shared_state_across_two_clients(make_client: ClientFactory, prefix: str, clock: FakeClock) -> None:
    worker_a = breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock)
    worker_b = breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock)
    await record(worker_a, failures=2)
    await record(worker_b, failures=1)
    assert await worker_a.state() is BreakerState.CLOSED
    await worker_b.record_failure()
    assert await worker_a.state() is BreakerState.OPEN
    assert await worker_a.allow() is False
    assert (await worker_a.snapshot())["opened_at"] == clock.now


async def test_concurrent_records_lose_no_updates(make_client: ClientFactory, prefix: str, clock: FakeClock) -> None:
    config = BreakerConfig(min_requests=1000)
    workers = [breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock, config) for _ in range(2)]
    calls = [w.record_failure() for w in workers for _ in range(100)] + [
        w.record_success() for w in workers for _ in range(50)
    ]
    await asyncio.gather(*calls)
    snap = await workers[0].snapshot()
    assert (snap["failures"], snap["requests"]) == (200, 300)


@pytest.mark.parametrize("probes", [1, 3])
async def test_concurrent_half_open_admits_exact_probe_count(
    make_client: ClientFactory, prefix: str, clock: FakeClock, probes: int
) -> None:
    config = BreakerConfig(min_requests=4, cooldown_seconds=15.0, half_open_probes=probes)
    worker_a = breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock, config)
    worker_b = breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock, config)
    await record(worker_a, failures=4)
    clock.advance(15.0)
    calls: list[Awaitable[bool]] = [w.allow() for _ in range(50) for w in (worker_a, worker_b)]
    admitted = await asyncio.gather(*calls)
    assert sum(admitted) == probes
    assert await worker_b.state() is BreakerState.HALF_OPEN


async def test_redis_key_layout_and_ttl(make_client: ClientFactory, prefix: str, clock: FakeClock) -> None:
    client = make_client(REDIS_URL)
    b = breaker(RedisBreakerStore(client, prefix=prefix), clock)
    key = prefix + "cloud"
    await record(b, failures=4)
    fields = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}
    bucket = int(clock.now // (CONFIG.window_seconds / 30))
    assert fields == {"state": "open", "opened_at": repr(clock.now), f"r:{bucket}": "4", f"f:{bucket}": "4"}
    ttl_ms = await client.pttl(key)
    assert 0 < ttl_ms <= 10 * (CONFIG.window_seconds + CONFIG.cooldown_seconds) * 1000
    clock.advance(CONFIG.cooldown_seconds)
    assert await b.allow() is True
    await b.record_success()
    assert await client.exists(key) == 0  # closed and empty needs no key at all


async def test_unreachable_redis_fails_safe_in_process(
    make_client: ClientFactory, prefix: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1")  # redis-py defaults, nothing tuned
    b = breaker(RedisBreakerStore(client, prefix=prefix), clock)
    with caplog.at_level(logging.WARNING, logger="upcoach.routing.breaker"):
        assert await b.allow() is True
        await record(b, successes=1, failures=2)
        assert await b.state() is BreakerState.CLOSED
        clock.advance(REDIS_RETRY_SECONDS + 1)  # Redis is retried here, still refused
        await b.record_failure()
        assert await b.snapshot() == {
            "name": "cloud",
            "state": "open",
            "failures": 3,
            "requests": 4,
            "opened_at": clock.now,
        }
        assert await b.allow() is False
        clock.advance(CONFIG.cooldown_seconds)
        assert [await b.allow() for _ in range(3)] == [True, False, False]
        await b.record_success()
        assert await b.state() is BreakerState.CLOSED
    await client.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unavailable" in warnings[0].getMessage()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_returns_to_shared_redis_after_outage(
    make_client: ClientFactory, prefix: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    worker = breaker(RedisBreakerStore(make_client(f"redis://127.0.0.1:{port}"), prefix=prefix), clock)
    other = breaker(RedisBreakerStore(make_client(REDIS_URL), prefix=prefix), clock)
    with caplog.at_level(logging.INFO, logger="upcoach.routing.breaker"):
        await open_breaker(worker)  # nothing listens on the port yet: opened in-process only
        assert await other.state() is BreakerState.CLOSED

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 6379)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

        proxy = await asyncio.start_server(forward, "127.0.0.1", port)
        try:
            assert await worker.allow() is False  # still inside the retry delay: in-process state
            clock.advance(REDIS_RETRY_SECONDS)
            assert await worker.allow() is True  # shared state is closed; the in-process one is dropped
            await record(other, failures=4)
            assert await worker.state() is BreakerState.OPEN
        finally:
            proxy.close()
            await proxy.wait_closed()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "breaker store: Redis is back, using shared breakers again"
    ]


def test_config_from_settings() -> None:
    settings = Settings(
        breaker_failure_rate=0.25,
        breaker_window_seconds=60,
        breaker_min_requests=10,
        breaker_cooldown_seconds=5,
        load_model=False,
    )
    assert breaker_config_from_settings(settings) == BreakerConfig(
        failure_rate=0.25, window_seconds=60.0, min_requests=10, cooldown_seconds=5.0, half_open_probes=1
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_rate": 0}, {"failure_rate": 1.5}, {"window_seconds": 0}, {"min_requests": 0}, {"half_open_probes": 0}],
)
def test_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
