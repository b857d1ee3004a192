"""Per-backend circuit breakers, with state shared across worker processes through Redis or kept in-process.

A breaker is closed while its backend is healthy. It opens when, over a sliding window, at least ``min_requests``
requests were seen and ``failures / requests >= failure_rate``. While open it refuses everything until
``cooldown_seconds`` have passed; it then reads as half-open and admits up to ``half_open_probes`` concurrent trial
requests. A probe success closes it with an empty window; a probe failure reopens it with a fresh cooldown.

The state machine lives in the store, not in :class:`CircuitBreaker`, because each step (read state, decide,
write) must be one atomic operation when several processes share a breaker: in Redis that is a Lua script, in
memory it is a synchronous method that never yields to the event loop.

All times come from the breaker's injectable clock and are stored as floats; Redis's own clock is never consulted
for logic, only for garbage-collecting idle keys via TTL.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio

    from upcoach.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# The window is a fixed number of buckets so memory per breaker stays bounded whatever window_seconds is; an event
# leaves the window between (WINDOW_BUCKETS - 1) / WINDOW_BUCKETS * window_seconds and window_seconds after it.
WINDOW_BUCKETS = 30
# How long a Redis outage is assumed to last before the store tries Redis again.
REDIS_RETRY_SECONDS = 5.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate: float = 0.5
    window_seconds: float = 30.0
    min_requests: int = 4
    cooldown_seconds: float = 15.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        # Zero probes would leave an opened breaker unable to ever close again.
        if not 0 < self.failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        if self.window_seconds <= 0 or self.cooldown_seconds <= 0:
            raise ValueError("window_seconds and cooldown_seconds must be positive")
        if self.min_requests < 1 or self.half_open_probes < 1:
            raise ValueError("min_requests and half_open_probes must be at least 1")


def breaker_config_from_settings(settings: Settings) -> BreakerConfig:
    return BreakerConfig(
        failure_rate=settings.breaker_failure_rate,
        window_seconds=settings.breaker_window_seconds,
        min_requests=settings.breaker_min_requests,
        cooldown_seconds=settings.breaker_cooldown_seconds,
    )


@dataclass(frozen=True)
class BreakerSnapshot:
    """What a store reports about one breaker at a given time; ``state`` already accounts for cooldown expiry."""

    state: BreakerState
    failures: int
    requests: int
    opened_at: float | None


class BreakerStore(Protocol):
    """Holds breaker state by name and runs each transition atomically.

    ``now`` is the caller's clock reading, so every process sharing a store must use comparable clocks.

    - ``acquire``: may a request go through now? Moves open -> half_open once the cooldown has passed and takes a
      probe slot while half-open; a half-open probe that has not reported within a cooldown is presumed lost
      (cancelled request) and its slot is freed, so a breaker cannot stay wedged half-open.
    - ``record``: the outcome of a request. Closed: counted in the window, may open. Half-open: success closes with
      an empty window, failure reopens with ``opened_at = now``. Open: ignored (a straggler from before it opened).
    - ``snapshot``: current state and window counts, read-only.
    """

    async def acquire(self, name: str, config: BreakerConfig, now: float) -> bool: ...

    async def record(self, name: str, config: BreakerConfig, now: float, *, success: bool) -> None: ...

    async def snapshot(self, name: str, config: BreakerConfig, now: float) -> BreakerSnapshot: ...


def _bucket_width(config: BreakerConfig) -> float:
    return config.window_seconds / WINDOW_BUCKETS


def _oldest_bucket(config: BreakerConfig, now: float) -> int:
    return math.floor(now / _bucket_width(config)) - WINDOW_BUCKETS + 1


def _trips(config: BreakerConfig, failures: int, requests: int) -> bool:
    # Same expression as the Lua script, so both stores round identically at the threshold.
    return requests >= config.min_requests and failures / requests >= config.failure_rate


def _visible_state(state: BreakerState, opened_at: float | None, config: BreakerConfig, now: float) -> BreakerState:
    if state is BreakerState.OPEN and opened_at is not None and now >= opened_at + config.cooldown_seconds:
        return BreakerState.HALF_OPEN
    return state


@dataclass
class _Entry:
    state: BreakerState = BreakerState.CLOSED
    opened_at: float | None = None
    probes: int = 0
    probe_at: float = 0.0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket index -> [requests, failures]

    def window(self, config: BreakerConfig, now: float) -> tuple[int, int]:
        oldest = _oldest_bucket(config, now)
        counts = [c for index, c in self.buckets.items() if index >= oldest]
        return sum(c[1] for c in counts), sum(c[0] for c in counts)


class MemoryBreakerStore:
    """In-process store: shared by the breakers of one worker only. Atomic because no method awaits."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    async def acquire(self, name: str, config: BreakerConfig, now: float) -> bool:
        entry = self._entries.get(name)
        if entry is None or entry.state is BreakerState.CLOSED:
            return True
        if entry.state is BreakerState.OPEN:
            assert entry.opened_at is not None
            if now < entry.opened_at + config.cooldown_seconds:
                return False
            entry.state, entry.probes = BreakerState.HALF_OPEN, 0
        if entry.probes and now >= entry.probe_at + config.cooldown_seconds:
            entry.probes = 0
        if entry.probes >= config.half_open_probes:
            return False
        entry.probes += 1
        entry.probe_at = now
        return True

    async def record(self, name: str, config: BreakerConfig, now: float, *, success: bool) -> None:
        entry = self._entries.setdefault(name, _Entry())
        if entry.state is BreakerState.OPEN:
            return
        if entry.state is BreakerState.HALF_OPEN:
            if success:
                del self._entries[name]
            else:
                entry.state, entry.opened_at, entry.probes = BreakerState.OPEN, now, 0
            return
        index = math.floor(now / _bucket_width(config))
        counts = entry.buckets.setdefault(index, [0, 0])
        counts[0] += 1
        counts[1] += 0 if success else 1
        oldest = _oldest_bucket(config, now)
        for stale in [i for i in entry.buckets if i < oldest]:
            del entry.buckets[stale]
        if _trips(config, *entry.window(config, now)):
            entry.state, entry.opened_at = BreakerState.OPEN, now

    async def snapshot(self, name: str, config: BreakerConfig, now: float) -> BreakerSnapshot:
        entry = self._entries.get(name) or _Entry()
        failures, requests = entry.window(config, now)
        state = _visible_state(entry.state, entry.opened_at, config, now)
        return BreakerSnapshot(state, failures, requests, entry.opened_at)


# Both scripts read a missing hash (or missing "state" field) as closed with an empty window, which is also what an
# expired key means. Timestamps are written from the caller's ARGV string, not tostring(number): Lua 5.1 formats
# numbers with 14 significant digits, which would round epoch floats to 0.1 ms.
_ACQUIRE_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local meta = redis.call('HMGET', key, 'state', 'opened_at', 'probes', 'probe_at')
local state = meta[1] or 'closed'
if state == 'closed' then
  return 1
end
local probes = tonumber(meta[3]) or 0
if state == 'open' then
  if now < tonumber(meta[2]) + cooldown then
    return 0
  end
  probes = 0
elseif probes > 0 and now >= tonumber(meta[4]) + cooldown then
  probes = 0
end
if probes >= limit then
  return 0
end
redis.call('HSET', key, 'state', 'half_open', 'probes', probes + 1, 'probe_at', ARGV[1])
redis.call('PEXPIRE', key, ARGV[4])
return 1
"""

_RECORD_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local success = ARGV[2] == '1'
local width = tonumber(ARGV[3])
local buckets = tonumber(ARGV[4])
local min_requests = tonumber(ARGV[5])
local failure_rate = tonumber(ARGV[6])
local state = redis.call('HGET', key, 'state') or 'closed'
if state == 'open' then
  return 0
end
if state == 'half_open' then
  if success then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', 'open', 'opened_at', ARGV[1], 'probes', 0)
    redis.call('PEXPIRE', key, ARGV[7])
  end
  return 1
end
local index = math.floor(now / width)
redis.call('HINCRBY', key, 'r:' .. index, 1)
if not success then
  redis.call('HINCRBY', key, 'f:' .. index, 1)
end
local oldest = index - buckets + 1
local fields = redis.call('HGETALL', key)
local requests, failures, stale = 0, 0, {}
for i = 1, #fields, 2 do
  local kind = string.sub(fields[i], 1, 2)
  if kind == 'r:' or kind == 'f:' then
    if tonumber(string.sub(fields[i], 3)) < oldest then
      stale[#stale + 1] = fields[i]
    elseif kind == 'r:' then
      requests = requests + tonumber(fields[i + 1])
    else
      failures = failures + tonumber(fields[i + 1])
    end
  end
end
if #stale > 0 then
  redis.call('HDEL', key, unpack(stale))
end
if requests >= min_requests and failures / requests >= failure_rate then
  redis.call('HSET', key, 'state', 'open', 'opened_at', ARGV[1])
end
redis.call('PEXPIRE', key, ARGV[7])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBreakerStore:
    """Store shared by every worker process through Redis; fails safe to an in-process store.

    Key layout: one hash per breaker, ``{prefix}{name}``, so each transition touches a single key (Cluster-safe)::

        state      closed | open | half_open   (absent: closed)
        opened_at  float, caller's clock, when it last opened
        probes     half-open probes admitted and not yet reported
        probe_at   float, when the last probe was admitted
        r:<n>      requests in window bucket n = floor(now / (window_seconds / 30))
        f:<n>      failures in bucket n

    Every transition is one Lua script (``register_script``; EVALSHA with automatic reload), so concurrent
    records from many processes cannot lose updates and exactly ``half_open_probes`` probes are admitted across all
    of them. Stale buckets are deleted as records arrive, and every write refreshes a TTL of
    10 x (window + cooldown), so abandoned breakers disappear; an expired key reads as closed.

    Fail-safe: any Redis error (refused connection, timeout, ...) is logged once as a warning, and for the next
    ``REDIS_RETRY_SECONDS`` (by the breaker's clock) every call goes to an in-process :class:`MemoryBreakerStore`,
    which keeps each breaker working for this worker alone; nothing raises into the request path. When Redis
    answers again its shared state wins and the interim in-process state is dropped. Because a hanging Redis
    would still delay requests, give the client short ``socket_timeout`` / ``socket_connect_timeout`` values; and
    because redis-py's default pool raises "Too many connections" past ``max_connections`` (which would count as an
    outage here), use a ``BlockingConnectionPool`` or a pool sized for the worker's concurrency.
    """

    def __init__(self, redis: redis.asyncio.Redis, prefix: str = "upcoach:breaker:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._record = redis.register_script(_RECORD_LUA)
        self._fallback = MemoryBreakerStore()
        self._down_until: float | None = None

    def key(self, name: str) -> str:
        return self._prefix + name

    async def acquire(self, name: str, config: BreakerConfig, now: float) -> bool:
        async def shared() -> bool:
            args = [repr(float(now)), repr(config.cooldown_seconds), config.half_open_probes, _ttl_ms(config)]
            return bool(await self._acquire(keys=[self.key(name)], args=args))

        return await self._guarded(now, shared, lambda: self._fallback.acquire(name, config, now))

    async def record(self, name: str, config: BreakerConfig, now: float, *, success: bool) -> None:
        async def shared() -> None:
            args = [
                repr(float(now)),
                "1" if success else "0",
                repr(_bucket_width(config)),
                WINDOW_BUCKETS,
                config.min_requests,
                repr(config.failure_rate),
                _ttl_ms(config),
            ]
            await self._record(keys=[self.key(name)], args=args)

        await self._guarded(now, shared, lambda: self._fallback.record(name, config, now, success=success))

    async def snapshot(self, name: str, config: BreakerConfig, now: float) -> BreakerSnapshot:
        async def shared() -> BreakerSnapshot:
            raw = await self._redis.hgetall(self.key(name))
            return _parse_hash({_text(k): _text(v) for k, v in raw.items()}, config, now)

        return await self._guarded(now, shared, lambda: self._fallback.snapshot(name, config, now))

    async def _guarded(self, now: float, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        retrying = self._down_until is not None
        if retrying and now < self._down_until:
            return await local()
        try:
            result = await shared()
        except (RedisError, OSError) as exc:
            if self._down_until is None:
                log.warning("breaker store: Redis unavailable, using in-process breakers: %s", exc)
            self._down_until = now + REDIS_RETRY_SECONDS
            return await local()
        # Only a call that started during the outage proves recovery: one already in flight when another call
        # failed must not undo that failover and throw away what the fallback recorded meanwhile.
        if retrying and self._down_until is not None:
            log.info("breaker store: Redis is back, using shared breakers again")
            self._down_until = None
            self._fallback = MemoryBreakerStore()
        return result


def _ttl_ms(config: BreakerConfig) -> int:
    return math.ceil(10 * (config.window_seconds + config.cooldown_seconds) * 1000)


def _parse_hash(fields: dict[str, str], config: BreakerConfig, now: float) -> BreakerSnapshot:
    oldest = _oldest_bucket(config, now)
    failures = requests = 0
    for name, value in fields.items():
        kind, _, index = name.partition(":")
        # Lua prints integral numbers >= 1e14 in exponent form, hence the float().
        if kind in ("r", "f") and int(float(index)) >= oldest:
            if kind == "r":
                requests += int(value)
            else:
                failures += int(value)
    opened_at = float(fields["opened_at"]) if "opened_at" in fields else None
    state = _visible_state(BreakerState(fields.get("state", "closed")), opened_at, config, now)
    return BreakerSnapshot(state, failures, requests, opened_at)


class CircuitBreaker:
    """One backend's breaker. Cheap to construct: all state is in the store, keyed by ``name``."""

    def __init__(
        self, name: str, config: BreakerConfig, store: BreakerStore, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = name
        self.config = config
        self._store = store
        self._clock = clock

    async def allow(self) -> bool:
        """Whether to send a request now; when True, report its outcome with ``record_success``/``record_failure``."""
        return await self._store.acquire(self.name, self.config, self._clock())

    async def record_success(self) -> None:
        await self._store.record(self.name, self.config, self._clock(), success=True)

    async def record_failure(self) -> None:
        await self._store.record(self.name, self.config, self._clock(), success=False)

    async def state(self) -> BreakerState:
        return (await self._store.snapshot(self.name, self.config, self._clock())).state

    async def snapshot(self) -> dict[str, object]:
        snap = await self._store.snapshot(self.name, self.config, self._clock())
        return {
            "name": self.name,
            "state": snap.state.value,
            "failures": snap.failures,
            "requests": snap.requests,
            "opened_at": snap.opened_at,
        }
