"""Prometheus metrics, prefixed ``upcoach_``, in a registry of the app's own (one per create_app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "upcoach_requests", "Requests answered, by processing mode, routing decision and outcome",
            ["mode", "decision", "outcome"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "upcoach_request_latency_seconds", "End-to-end latency by processing mode", ["mode"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "upcoach_first_token_seconds", "Time to first token by processing mode", ["mode"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("upcoach_tokens", "Tokens by mode and kind", ["mode", "kind"], registry=r)
        self.cost = Counter("upcoach_cost_usd", "Cloud cost incurred (USD) by mode", ["mode"], registry=r)
        self.cost_avoided = Counter("upcoach_cost_avoided_usd", "Cloud cost avoided by answering locally", registry=r)
        self.fallbacks = Counter(
            "upcoach_fallbacks", "Requests answered by another backend than decided", ["source", "target", "reason"],
            registry=r,
        )  # fmt: skip
        self.breaker_state = Gauge(
            "upcoach_breaker_state", "Circuit breaker state (0 closed, 1 half-open, 2 open)", ["backend"], registry=r
        )
        self.queue_depth = Gauge("upcoach_local_queue_depth", "Local requests running or waiting", registry=r)
        self.decision_seconds = Histogram(
            "upcoach_routing_decision_seconds", "Time to compute a routing decision",
            buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005), registry=r,
        )  # fmt: skip
        # Requests refused because a check raised (security/guard.py): each one is a 503, never a pass.
        self.security_check_failures = Counter(
            "upcoach_security_check_failures", "Requests refused because a security check failed to run", ["check"],
            registry=r,
        )  # fmt: skip
        # Local answers that failed a coaching answer check (routing/answer_gate.py), by check.
        self.answer_check_failures = Counter(
            "upcoach_answer_check_failures", "Local answers that failed an answer check", ["check"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
