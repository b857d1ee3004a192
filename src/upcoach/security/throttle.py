"""A brake on repeated failures per client address: refused credentials (the Authenticator) and failed dashboard
sign-ins.

With Redis (every deployment of more than one worker has it) the failures are counted there, so an attacker
cannot multiply their guesses by the number of workers the port spreads them over: one sorted set per address,
the failures' times as scores, trimmed to the window. Without Redis, or while it is unreachable (for 5 s after an
error, like the rate limiter), they are counted in this process, bounded: the oldest addresses are forgotten first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_THROTTLED_CLIENTS = 10_000
REDIS_RETRY_SECONDS = 5.0


class FailureThrottle:
    """At most ``attempts`` failures per client address within ``window_seconds``; then the address waits.

    ``name`` keeps the brakes apart in Redis (sign-ins and API credentials are counted separately)."""

    def __init__(
        self,
        *,
        attempts: int,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
        redis: Any = None,
        name: str = "auth",
    ) -> None:
        if attempts < 1 or window_seconds <= 0:
            raise ValueError("attempts must be >= 1 and the window positive")
        self.attempts = attempts
        self.window_seconds = window_seconds
        self.clock = clock
        self._redis = redis
        self._prefix = f"upcoach:throttle:{name}:"
        self._redis_down_until = 0.0
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    async def retry_after(self, client: str) -> float | None:
        """Seconds until this address may try again, or None if it may try now."""
        now = self.clock()
        oldest: float | None = None
        count = 0
        if self._redis_usable(now):
            try:
                pipe = self._redis.pipeline(transaction=False)
                key = self._key(client)
                pipe.zremrangebyscore(key, "-inf", now - self.window_seconds)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zcard(key)
                _, first, count = await pipe.execute()
                oldest = float(first[0][1]) if first else None
            except Exception as exc:
                self._redis_failed(now, exc)
                oldest, count = None, 0
            else:
                return self._wait(oldest, count, now)
        failures = self._recent(client, now)
        return self._wait(failures[0] if failures else None, len(failures), now)

    async def failed(self, client: str) -> None:
        now = self.clock()
        if self._redis_usable(now):
            try:
                pipe = self._redis.pipeline(transaction=False)
                key = self._key(client)
                pipe.zadd(key, {f"{now!r}:{secrets.token_hex(4)}": now})
                pipe.zremrangebyscore(key, "-inf", now - self.window_seconds)
                pipe.zremrangebyrank(key, 0, -(self.attempts + 1))  # only the newest ``attempts`` matter
                pipe.expire(key, math.ceil(self.window_seconds) + 1)
                await pipe.execute()
                return
            except Exception as exc:
                self._redis_failed(now, exc)
        failures = self._recent(client, now)
        failures.append(now)
        self._failures[client] = failures
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_THROTTLED_CLIENTS:
            self._failures.popitem(last=False)

    def _wait(self, oldest: float | None, count: int, now: float) -> float | None:
        if count < self.attempts or oldest is None:
            return None
        return max(1.0, oldest + self.window_seconds - now)

    def _key(self, client: str) -> str:
        return self._prefix + hashlib.sha256(client.encode()).hexdigest()[:32]

    def _redis_usable(self, now: float) -> bool:
        return self._redis is not None and now >= self._redis_down_until

    def _redis_failed(self, now: float, exc: Exception) -> None:
        log.warning("failure throttle: redis unavailable (%s); counting in process for %.0f s", exc,
                    REDIS_RETRY_SECONDS)  # fmt: skip
        self._redis_down_until = now + REDIS_RETRY_SECONDS

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client, deque(maxlen=self.attempts))
        horizon = now - self.window_seconds
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures
