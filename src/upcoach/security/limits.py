"""Per-caller rate limits as token buckets: in Redis when configured (shared by every worker), else in process.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_second``; each request takes one. An empty
bucket answers with how long until the next token, which becomes the 429's Retry-After. If Redis fails, the
limiter falls back to its in-process buckets rather than refusing or waving everything through.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_REDIS_TAKE = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', key, 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'at', ARGV[3])
redis.call('EXPIRE', key, math.ceil(burst / rate) + 60)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0


class TokenBucketLimiter:
    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        redis: object | None = None,
        prefix: str = "upcoach:ratelimit:",
        clock: Callable[[], float] = time.time,
        max_local_buckets: int = 100_000,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate_per_second
        self.burst = burst
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._script = redis.register_script(_REDIS_TAKE) if redis is not None else None  # type: ignore[attr-defined]
        self._local: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_local = max_local_buckets
        self._redis_down_until = 0.0

    async def take(self, key: str) -> Verdict:
        now = self._clock()
        if self._script is not None and now >= self._redis_down_until:
            try:
                allowed, wait = await self._script(keys=[self._prefix + key], args=[self.rate, self.burst, repr(now)])
                return Verdict(bool(int(allowed)), float(wait))
            except Exception as exc:  # an outage must neither block everyone nor lift the limits
                log.warning("rate limiter: redis unavailable (%s); limiting in process for 5 s", exc)
                self._redis_down_until = now + 5.0
        return self._take_local(key, now)

    def _take_local(self, key: str, now: float) -> Verdict:
        tokens, at = self._local.pop(key, (float(self.burst), now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens >= 1:
            verdict = Verdict(True)
            tokens -= 1
        else:
            verdict = Verdict(False, (1 - tokens) / self.rate)
        self._local[key] = (tokens, now)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)
        return verdict


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
