"""Routing decision time: feature extraction plus the pure policy, over a varied set of coaching requests.

The goal is < 1 ms at P99 per decision; this measures the same two calls the engine makes per request
(``extract`` and ``decide``), not the I/O of reading live backend state.
"""

from __future__ import annotations

import itertools
import time

from benchmarks.common import USER_MESSAGES, pct
from upcoach.llm.base import ChatMessage
from upcoach.routing.features import extract
from upcoach.routing.policy import Device, Hints, LiveState, PolicyConfig, decide

LONG_REQUEST = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each for a new team lead, and "
    "then build me a 12-week plan with weekly milestones. "
) * 6
ROUNDS = 20_000


def _cases() -> list[tuple[tuple[ChatMessage, ...], Hints, LiveState]]:
    conversations = [(ChatMessage("system", "You are a coach."), ChatMessage("user", text)) for text in USER_MESSAGES]
    conversations.append((ChatMessage("user", LONG_REQUEST),))
    deep = tuple(
        ChatMessage("user" if i % 2 == 0 else "assistant", USER_MESSAGES[i % len(USER_MESSAGES)]) for i in range(21)
    )
    conversations.append(deep)
    hints = [Hints("public"), Hints("private"), Hints("public", True, 250.0), Hints("sensitive")]
    states = [
        LiveState(True, False, 220.0, True, False, False, 700.0),
        LiveState(True, True, 900.0, True, False, False, 700.0),
        LiveState(False, False, 300.0, True, True, False, 700.0),
    ]
    return list(itertools.product(conversations, hints, states))


def run() -> dict[str, float]:
    cases = _cases()
    config = PolicyConfig(0.5)
    device = Device("Pixel 8", frozenset({"local-llm"}), 64.0)
    timings: list[float] = []
    for i in range(ROUNDS):
        messages, hints, state = cases[i % len(cases)]
        started = time.perf_counter_ns()
        decide(extract(messages), hints, state, config, device)
        timings.append((time.perf_counter_ns() - started) / 1000)
    return {"p50_us": pct(timings, 50), "p99_us": pct(timings, 99), "max_us": max(timings), "n": float(ROUNDS)}


def to_markdown(result: dict[str, float]) -> str:
    return (
        "| decisions | P50 µs | P99 µs | max µs |\n|---|---|---|---|\n"
        f"| {int(result['n'])} | {result['p50_us']:.1f} | {result['p99_us']:.1f} | {result['max_us']:.0f} |"
    )


if __name__ == "__main__":
    print(to_markdown(run()))
