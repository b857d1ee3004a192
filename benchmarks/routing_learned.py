"""The learned router against the rules (issue 20): local share and quality at equal quality, with intervals, on the
labelled set and on the simulator; off-policy estimates against the simulator's truth; decision time.

    .venv/bin/python -m benchmarks.routing_learned     # prints the section
    benchmarks/run.py --only routing                    # writes it to docs/benchmarks.md (with the rules' section)

- labelled set: the router is trained on the dev split only (``upcoach router train --labelled``'s path) and scored
  on the held-out split; quality = share of requests answered well enough, assuming the cloud answers every request
  well and the local model exactly the ``local_ok`` ones;
- simulator (routing/learned_sim.py): a router is trained on a simulator log of the rules (5 % exploration, free
  choices of opted-in users, requests from the dev split), then both policies decide the free choices of a fresh
  log over held-out requests; quality is the exact expected quality from the hidden difficulty. "Equal quality":
  among the router's thresholds, the one keeping most requests local with quality at least the rules';
- intervals: 95 % percentile bootstrap over requests (1,000 resamples);
- decision time: ``learned.prepare`` + ``policy.decide`` per request, as the engine calls them (feature extraction
  excluded: it is the same for both and measured in "Routing decision time").
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from upcoach.llm.base import ChatMessage
from upcoach.privacy.settings import PrivacySettings
from upcoach.router_cli import labelled_rows, load_labelled
from upcoach.routing.features import extract
from upcoach.routing.learned import LearnedRouter, prepare
from upcoach.routing.learned_eval import Logged, evaluate, p_local, router_policy, rules_policy
from upcoach.routing.learned_sim import HEALTHY, SimRecord, free_rows, quality, simulate
from upcoach.routing.learned_train import train
from upcoach.routing.policy import Hints, PolicyConfig, decide

DATA = Path(__file__).resolve().parent / "data" / "routing_requests.jsonl"
HEADING = "### Learned routing: rules against the learned router"
ROUNDS = 1000
# Written after the run of 2026-12-03 16:44 UTC; re-read it against the tables when the figures change.
READING = (
    "Reading: on held-out requests the learned router reaches the 0.90/0.90 goal the rules miss (hard requests sent"
    " to the cloud 0.95 against 0.85, simple kept local 0.90 against 1.00), so its quality is higher; the issue's "
    "other goal, 10 points more requests local at equal quality, is **not met**: at the rules' quality it keeps "
    "about as many (labelled set) or 10 points fewer (simulator) local. The rules keep every simple held-out "
    "request local and the labelled set is half simple, so there is no room above them on local share there; in the"
    " simulator, difficulty within a label is hidden noise, which no feature predicts. The off-policy intervals "
    "hold the exact value for both policies. The free step costs ~55 µs of CPU at the median and under 0.5 ms at "
    "P99; the wall-clock P99 on this shared machine is preemption."
)
THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.01), 2)


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    samples = rng.integers(0, len(values), size=(ROUNDS, len(values)))
    means = values[samples].mean(axis=1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _fmt(stat: tuple[float, float, float]) -> str:
    return f"{stat[0]:.3f} [{stat[1]:.3f}, {stat[2]:.3f}]"


def _equal_quality(
    qualities: Callable[[float], np.ndarray], local: Callable[[float], np.ndarray], floor: float
) -> float | None:
    """The router threshold keeping most requests local while its mean quality stays >= ``floor``."""
    best: tuple[float, float] | None = None
    for t in THRESHOLDS:
        if qualities(t).mean() >= floor - 1e-9:
            share = float(local(t).mean())
            if best is None or share > best[1]:
                best = (float(t), share)
    return None if best is None else best[0]


def labelled_table(rng: np.random.Generator) -> tuple[list[str], LearnedRouter]:
    dev, held = labelled_rows(load_labelled(DATA, "dev")), labelled_rows(load_labelled(DATA, "held"))
    router = LearnedRouter(train(dev, source="labelled dev", version="bench-labelled"))
    ok = np.array([r.reward == 1.0 for r in held])
    rules_local = np.array([rules_policy()(r) for r in held])
    scores = np.array([p_local(router, r) for r in held])

    def row(name: str, local: np.ndarray) -> str:
        good = (ok | ~local).astype(float)
        simple, hard = local[ok].mean(), (~local[~ok]).mean()
        return (f"| {name} | {_fmt(_ci(local.astype(float), rng))} | {_fmt(_ci(good, rng))} | {simple:.2f} | "
                f"{hard:.2f} |")  # fmt: skip

    learned_local = scores >= router.threshold
    floor = float((ok | ~rules_local).mean())
    t = _equal_quality(lambda t: (ok | ~(scores >= t)).astype(float), lambda t: scores >= t, floor)
    rows = [
        "| policy (held-out split, 120 requests) | local share [95% CI] | quality [95% CI] | simple kept local | "
        "hard sent to the cloud |",
        "|---|---|---|---|---|",
        row("rules (complexity >= 0.50 -> cloud)", rules_local),
        row(f"learned router, threshold {router.threshold:.2f}", learned_local),
    ]
    if t is not None:
        rows.append(row(f"learned router at the rules' quality (threshold {t:.2f})", scores >= t))
    return rows, router


def _free(records: Sequence[SimRecord]) -> list[SimRecord]:
    return [r for r in records if not r.log.forced and r.user.analytics_opt_in]


def simulator_table(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    dev, held = load_labelled(DATA, "dev"), load_labelled(DATA, "held")
    training_log = simulate(dev, 4000, explore=0.05, seed=11)
    router = LearnedRouter(train(free_rows(training_log, keep_text=True), source="simulator", version="bench-sim"))
    test = _free(simulate(held, 4000, explore=0.0, seed=12))
    rows = [r.logged for r in test]
    d = np.array([r.difficulty for r in test])
    scores = np.array([p_local(router, r) for r in rows])
    rules_local = np.array([rules_policy()(r) for r in rows])
    q_local, q_cloud = np.array([quality("local", x) for x in d]), np.array([quality("cloud", x) for x in d])

    def q(local: np.ndarray) -> np.ndarray:
        return np.where(local, q_local, q_cloud)

    floor = float(q(rules_local).mean())
    t = _equal_quality(lambda t: q(scores >= t), lambda t: scores >= t, floor)

    def row(name: str, local: np.ndarray) -> str:
        return f"| {name} | {_fmt(_ci(local.astype(float), rng))} | {_fmt(_ci(q(local), rng))} |"

    table = [
        f"| policy ({len(test)} free choices over held-out requests) | local share [95% CI] | expected quality "
        "[95% CI] |",
        "|---|---|---|",
        row("rules (complexity >= 0.50 -> cloud)", rules_local),
        row(f"learned router, threshold {router.threshold:.2f}", scores >= router.threshold),
    ]
    if t is not None:
        local = scores >= t
        diff = local.astype(float) - rules_local.astype(float)
        table.append(row(f"learned router at the rules' quality (threshold {t:.2f})", local))
        table.append(f"| difference in local share (learned - rules), same requests | {_fmt(_ci(diff, rng))} | |")
    ope = _ope(held, router)
    return table, ope


def _ope(pool: list, router: LearnedRouter) -> list[str]:
    """Off-policy estimates from a log of the rules with 20 % exploration, against the exact value."""
    log = simulate(pool, 4000, explore=0.2, seed=13)
    rows: list[Logged] = free_rows(log, keep_text=True)
    explorable = [r for r in log if not r.log.forced and r.user.analytics_opt_in and 0 < r.log.propensity < 1]
    lines = [
        "| policy | rows | IPS [95% CI] | DR [95% CI] | exact expected reward (P(rating >= 4)) |",
        "|---|---|---|---|---|",
    ]
    for name, policy in (("rules", rules_policy()), (f"learned, threshold {router.threshold:.2f}",
                                                     router_policy(router))):  # fmt: skip
        result = evaluate(name, policy, rows, rounds=ROUNDS, seed=0)
        truth = np.mean([r.expected_reward("local" if policy(r.logged) else "cloud") for r in explorable])
        lines.append(f"| {name} | {result.rows} | {result.ips} | {result.dr} | {truth:.3f} |")
    return lines


def timing(router: LearnedRouter) -> str:
    held = load_labelled(DATA, "held")
    prepared = [(extract((ChatMessage("user", a.text),)), a.text) for a in held]
    user = PrivacySettings(analytics_opt_in=True)
    wall, cpu = [], []
    for _ in range(25):
        for features, text in prepared:
            start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            step = prepare(router, features, text, explore=0.05, draw=0.5, explorable=True)
            decide(features, Hints("public"), HEALTHY, PolicyConfig(), user=user, free=step.free)
            cpu.append((time.thread_time_ns() - start_cpu) / 1e3)
            wall.append((time.perf_counter_ns() - start) / 1e3)
    rows = []
    for name, times in (("wall clock", wall), ("thread CPU time", cpu)):
        times.sort()
        p99 = times[int(0.99 * len(times))]
        rows.append(f"| {name} | {len(times)} | {statistics.median(times):.1f} | {p99:.1f} | {times[-1]:.0f} |")
    return "\n".join(rows)


def section_lines() -> list[str]:
    rng = np.random.default_rng(0)
    labelled, router = labelled_table(rng)
    simulator, ope = simulator_table(rng)
    return [
        f"{HEADING} (issue 20)",
        "",
        "How it is measured: benchmarks/routing_learned.py's docstring. The router is a logistic regression over "
        "hashed word 1-2-grams, lengths, language, depth, device tier and hour (routing/learned.py); the rule "
        "tables' outputs are left out of its fit because they were tuned on the dev split.",
        "",
        "Labelled set (trained on dev, scored on held-out):",
        "",
        *labelled,
        "",
        "Simulator (hidden difficulty, noisy ratings; trained on a log over dev requests, scored on held-out ones):",
        "",
        *simulator,
        "",
        "Off-policy estimates on the simulator (a log of the rules with 20 % exploration) against the exact value:",
        "",
        *ope,
        "",
        "Decision time of the free step with the learned router (`prepare` + `decide`, held-out requests, µs):",
        "",
        f"Load average when timed: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall-clock P99 then mostly "
        "measures preemption; the thread CPU time is what the decision itself costs).",
        "",
        "| clock | decisions | P50 µs | P99 µs | max µs |",
        "|---|---|---|---|---|",
        timing(router),
        "",
        READING,
        "",
        "Not measured here: an A/B between router versions on live traffic (`upcoach router ab`, which needs real "
        "users' ratings) and the admin dashboard's trade-off curve (not built).",
    ]


if __name__ == "__main__":
    print("\n".join(section_lines()))
