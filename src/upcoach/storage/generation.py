"""A change counter in Redis: how several workers keep a cache and still see another worker's change at once.

Whoever changes something that others cache (a key revoked, privacy settings saved) bumps the counter; every
reader compares it with the value its cache was filled under before trusting the cache, one Redis GET (a fraction
of a millisecond, against milliseconds for the database read it replaces). Nothing is missed the way a lost
pub/sub message would be missed: a worker that cannot read the counter (Redis down) does not trust its cache.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

KEY_PREFIX = "upcoach:generation:"
# After a failed read the counter is not asked again for this long (callers bypass their caches meanwhile): under a
# burst that exhausts the Redis connection pool, every request waiting for a connection only to fail would add
# seconds, and a log line each.
REDIS_RETRY_SECONDS = 1.0
K = TypeVar("K")
V = TypeVar("V")


class Generation:
    """``current()``: the counter (0 before the first bump), or None when it cannot be read; ``bump()``."""

    def __init__(self, redis: Any, name: str) -> None:
        self._redis = redis
        self._key = KEY_PREFIX + name
        self._down_until = 0.0

    async def current(self) -> int | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            value = await self._redis.get(self._key)
        except Exception as exc:
            log.warning("%s: redis unavailable (%s); caches keyed on it are bypassed for %.0f s", self._key, exc,
                        REDIS_RETRY_SECONDS)  # fmt: skip
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            return None
        return int(value) if value is not None else 0

    async def bump(self) -> None:
        """Tell every worker its cache is stale. Raises if Redis cannot be reached: the change must not look
        propagated when it is not."""
        await self._redis.incr(self._key)


class GenerationCache(Generic[K, V]):
    """Entries valid while the generation they were stored under is current, and for at most ``ttl`` seconds
    (a bound on memory and on what an entry can outlive, not the source of freshness)."""

    def __init__(self, generation: Generation, *, ttl: float, max_entries: int, clock: Any) -> None:
        self.generation = generation
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._seen: int | None = None
        self._entries: dict[K, tuple[float, V]] = {}

    async def get(self, key: K) -> tuple[V | None, int | None]:
        """The cached value (None if absent, stale or untrustworthy) and the generation read now (for ``put``)."""
        current = await self.generation.current()
        if current is None or current != self._seen:
            self._entries.clear()
            self._seen = current
            return None, current
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return None, current
        return entry[1], current

    def put(self, key: K, value: V, generation: int | None) -> None:
        """Store ``value`` read under ``generation`` (the one ``get`` returned before the read); never when that
        generation is unknown or already superseded."""
        if generation is None or generation != self._seen:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (self._clock() + self._ttl, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)
