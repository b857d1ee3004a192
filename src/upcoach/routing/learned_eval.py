"""Off-policy evaluation of routers on logged free choices: inverse propensity (IPS) and doubly robust (DR).

A logged row is one free choice (forced choices are the same under every router and say nothing about them): the
dense vector, the text block's logit, the side taken, its propensity, and the reward observed later (1: the answer
was good enough — rated 4-5, no fallback, not rephrased; 0 otherwise). Only rows with both sides possible
(0 < propensity < 1, i.e. explorable) support an unbiased estimate of a policy that would have chosen differently;
rows of users without analytics opt-in never have it, and are never stored with a vector in the first place.

- IPS: mean of 1[pi(x) = a] * r / p;
- DR: mean of q(x, pi(x)) + 1[pi(x) = a] * (r - q(x, a)) / p, with q a per-side reward model fitted on the same rows
  (ridge regression on the vector and text logit; plain numpy);
- intervals: percentile bootstrap over rows (``rounds`` resamples, a seeded generator: reproducible).

A policy is ``local?(row) -> bool``: a router version at its threshold, or the rules (the vector's complexity entry
against the complexity threshold). A router scores a row's text when the row has it (the simulator's); a logged
row has only the logging version's text logit, which is exact for a version trained from logs on top of that one
and an approximation for a version with a text block of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from upcoach.routing.learned import LearnedRouter, dense_names

Policy = Callable[["Logged"], bool]
COMPLEXITY = dense_names().index("complexity")


@dataclass(frozen=True)
class Logged:
    vector: np.ndarray
    text_logit: float
    side: str  # "local" | "cloud"
    reward: float
    propensity: float
    text: str | None = None  # the simulator keeps it (training may use it); logged rows never have it


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Evaluation:
    policy: str
    rows: int
    ips: Estimate
    dr: Estimate
    local_share: Estimate


def router_policy(router: LearnedRouter, threshold: float | None = None) -> Policy:
    cut = router.threshold if threshold is None else threshold
    return lambda row: p_local(router, row) >= cut


def p_local(router: LearnedRouter, row: Logged) -> float:
    if row.text is not None:
        return router.score(row.vector, row.text).p_local
    return router.score_logged(row.vector, row.text_logit)


def rules_policy(complexity_threshold: float = 0.5) -> Policy:
    return lambda row: float(row.vector[COMPLEXITY]) < complexity_threshold


def _design(rows: Sequence[Logged]) -> np.ndarray:
    return np.column_stack([np.stack([r.vector for r in rows]), [r.text_logit for r in rows]])


def reward_model(rows: Sequence[Logged], ridge: float = 1.0) -> Callable[[np.ndarray, str], np.ndarray]:
    """q(x, side): ridge regression per side, clipped to [0, 1]; a side without rows predicts the overall mean."""
    x = _design(rows)
    mean = float(np.mean([r.reward for r in rows])) if rows else 0.5
    weights: dict[str, np.ndarray | None] = {}
    for side in ("local", "cloud"):
        mask = np.array([r.side == side for r in rows])
        if mask.sum() < 2:
            weights[side] = None
            continue
        xs, ys = x[mask], np.array([r.reward for r in rows])[mask]
        weights[side] = np.linalg.solve(xs.T @ xs + ridge * np.eye(xs.shape[1]), xs.T @ ys)

    def predict(design: np.ndarray, side: str) -> np.ndarray:
        w = weights[side]
        return np.full(len(design), mean) if w is None else np.clip(design @ w, 0.0, 1.0)

    return predict


def evaluate(name: str, policy: Policy, rows: Sequence[Logged], *, rounds: int = 500, seed: int = 0) -> Evaluation:
    """IPS and DR estimates of ``policy``'s mean reward on ``rows``, and its local share, with 95 % intervals."""
    rows = [r for r in rows if 0.0 < r.propensity < 1.0]
    if not rows:
        raise ValueError("no explorable logged rows: nothing supports an off-policy estimate")
    design = _design(rows)
    local = np.array([policy(r) for r in rows])
    taken_local = np.array([r.side == "local" for r in rows])
    match = local == taken_local
    rewards = np.array([r.reward for r in rows])
    props = np.array([r.propensity for r in rows])
    q = reward_model(rows)
    q_local, q_cloud = q(design, "local"), q(design, "cloud")
    q_pi = np.where(local, q_local, q_cloud)
    q_taken = np.where(taken_local, q_local, q_cloud)
    ips_terms = match * rewards / props
    dr_terms = q_pi + match * (rewards - q_taken) / props
    local_terms = local.astype(np.float64)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(rows), size=(rounds, len(rows)))

    def estimate(terms: np.ndarray) -> Estimate:
        means = terms[samples].mean(axis=1)
        return Estimate(float(terms.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))

    return Evaluation(name, len(rows), estimate(ips_terms), estimate(dr_terms), estimate(local_terms))
