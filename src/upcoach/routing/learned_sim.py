"""A routing simulator: synthetic users whose ratings depend on a hidden difficulty and the side that answered.

Each simulated request is one of a pool of real coaching requests (text and label "the small local model answers
this well enough"); its hidden difficulty ``d`` is drawn around the label (Beta(2, 5) when the local model copes,
Beta(5, 2) when not), so the text predicts it only partly. The local answer is good with probability
``1.05 - 1.1 d``, the cloud's with ``0.93 - 0.08 d``; each user is more or less lenient, and rates 4-5 for a good
answer, 1-3 otherwise, with noise. Users differ in privacy level and analytics opt-in, so forced choices and
non-explorable free ones happen as in production.

Every decision goes through the shipped path: ``features.extract``, ``learned.prepare`` and ``policy.decide``
(both sides healthy, the simulator draws the exploration number as the engine does). The log it returns is what
request records hold (vector, text logit, side, propensity, forced) plus the reward, and the hidden truth for
scoring a policy exactly (``expected quality``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from upcoach.llm.base import ChatMessage
from upcoach.privacy.settings import PrivacySettings
from upcoach.routing.features import extract
from upcoach.routing.learned import LearnedRouter, prepare
from upcoach.routing.learned_eval import Logged
from upcoach.routing.policy import Hints, LiveState, PolicyConfig, RoutingLog, decide

HEALTHY = LiveState(local_available=True, cloud_configured=True)


@dataclass(frozen=True)
class Ask:
    text: str
    local_ok: bool
    lang: str = "en"


@dataclass(frozen=True)
class SimUser:
    id: str
    leniency: float  # added to the rating before it is rounded
    analytics_opt_in: bool
    privacy_level: str  # the hint this user's app sends


@dataclass(frozen=True)
class SimRecord:
    user: SimUser
    ask: Ask
    difficulty: float
    log: RoutingLog
    logged: Logged  # what the request record (plus its rating) holds
    rating: int

    def quality(self, side: str) -> float:
        return quality(side, self.difficulty)

    def expected_reward(self, side: str) -> float:
        """The exact chance of a 4-5 rating on ``side`` (what off-policy estimates of the reward converge to)."""
        good = quality(side, self.difficulty)
        return good * _rated_high(GOOD_RATING, self.user.leniency) + (1 - good) * _rated_high(
            BAD_RATING, self.user.leniency
        )


GOOD_RATING = 4.5  # a good answer's rating before leniency and noise; a poor one's is BAD_RATING
BAD_RATING = 2.0
RATING_NOISE = 0.6


def _rated_high(center: float, leniency: float) -> float:
    """P(round(center + leniency + N(0, RATING_NOISE)) >= 4)."""
    return 0.5 * math.erfc((3.5 - center - leniency) / (RATING_NOISE * math.sqrt(2)))


def quality(side: str, difficulty: float) -> float:
    if side == "local":
        return float(np.clip(1.05 - 1.1 * difficulty, 0.02, 0.98))
    return float(np.clip(0.93 - 0.08 * difficulty, 0.02, 0.98))


def users(count: int, seed: int = 0) -> list[SimUser]:
    rng = np.random.default_rng(seed)
    levels = rng.choice(["public", "private", "sensitive"], size=count, p=[0.6, 0.3, 0.1])
    return [
        SimUser(f"sim-{i}", float(rng.normal(0.0, 0.4)), bool(rng.random() < 0.7), str(levels[i])) for i in range(count)
    ]


def difficulty(ask: Ask, rng: np.random.Generator) -> float:
    return float(rng.beta(2, 5) if ask.local_ok else rng.beta(5, 2))


def simulate(
    pool: Sequence[Ask],
    requests: int,
    *,
    router: LearnedRouter | None = None,
    explore: float = 0.05,
    n_users: int = 200,
    seed: int = 0,
    config: PolicyConfig | None = None,
) -> list[SimRecord]:
    """``requests`` decisions by the shipped policy (``router`` or the rules), with ratings from the users."""
    rng = np.random.default_rng(seed)
    population = users(n_users, seed)
    config = config or PolicyConfig()
    out = []
    for _ in range(requests):
        user = population[int(rng.integers(len(population)))]
        ask = pool[int(rng.integers(len(pool)))]
        d = difficulty(ask, rng)
        features = extract((ChatMessage("user", ask.text),))
        settings = PrivacySettings(analytics_opt_in=user.analytics_opt_in)
        hints = Hints(user.privacy_level)  # type: ignore[arg-type]
        prepared = prepare(router, features, ask.text, explore=explore, draw=float(rng.random()),
                           explorable=True, hour=int(rng.integers(24)))  # fmt: skip
        decision = decide(features, hints, HEALTHY, config, user=settings, free=prepared.free)
        assert decision.routing is not None and decision.target is not None
        side = decision.target
        good = rng.random() < quality(side, d)
        center = GOOD_RATING if good else BAD_RATING
        rating = int(np.clip(round(center + user.leniency + rng.normal(0.0, RATING_NOISE)), 1, 5))
        logged = Logged(prepared.vector, prepared.text_logit, side, 1.0 if rating >= 4 else 0.0,
                        decision.routing.propensity, ask.text)  # fmt: skip
        out.append(SimRecord(user, ask, d, decision.routing, logged, rating))
    return out


def free_rows(records: Sequence[SimRecord], *, keep_text: bool = False) -> list[Logged]:
    """The rows a real deployment could learn from: free choices of users who opted in to analytics."""
    rows = []
    for r in records:
        if r.log.forced or not r.user.analytics_opt_in:
            continue
        rows.append(r.logged if keep_text else Logged(r.logged.vector, r.logged.text_logit, r.logged.side,
                                                      r.logged.reward, r.logged.propensity))  # fmt: skip
    return rows
