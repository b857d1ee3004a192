"""What a request costs, what it would have cost in the cloud, and the daily cloud budget."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from upcoach.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1_000_000


class PriceTable:
    def __init__(self, prices: dict[str, Price], default_cloud: Price, local_per_1m: float) -> None:
        self._prices = prices
        self._default = default_cloud
        self._local = Price(local_per_1m, local_per_1m)

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        def price(entry: dict[str, float]) -> Price:
            return Price(float(entry.get("input", 0.0)), float(entry.get("output", 0.0)))

        return cls(
            {name: price(entry) for name, entry in settings.prices.items()},
            price(settings.default_cloud_price),
            settings.local_cost_per_1m_tokens,
        )

    def cloud(self, model: str) -> Price:
        return self._prices.get(model, self._default)

    def local_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self._local.cost(prompt_tokens, completion_tokens)


class CloudBudget:
    """Cloud spend per UTC day against an optional cap; shared through Redis when one is configured."""

    def __init__(self, limit_usd: float | None, redis: object | None = None, prefix: str = "upcoach:budget:") -> None:
        self.limit_usd = limit_usd
        self._redis = redis
        self._prefix = prefix
        self._day = ""
        self._spent = 0.0

    def _today(self) -> str:
        return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")

    async def spent(self) -> float:
        if self._redis is not None:
            try:
                value = await self._redis.get(self._prefix + self._today())  # type: ignore[attr-defined]
                return float(value or 0.0)
            except Exception as exc:  # Redis trouble must not block routing: fall back to this process's view
                log.warning("budget: redis unavailable (%s); using in-process spend", exc)
        return self._spent if self._day == self._today() else 0.0

    async def over(self) -> bool:
        return self.limit_usd is not None and await self.spent() >= self.limit_usd

    async def add(self, usd: float) -> None:
        if usd <= 0:
            return
        today = self._today()
        if self._day != today:
            self._day, self._spent = today, 0.0
        self._spent += usd
        if self._redis is not None:
            try:
                key = self._prefix + today
                await self._redis.incrbyfloat(key, usd)  # type: ignore[attr-defined]
                await self._redis.expire(key, 2 * 86400)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("budget: redis unavailable (%s); spend kept in process", exc)
