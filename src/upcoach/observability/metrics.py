"""Prometheus metrics, prefixed ``upcoach_``, in a registry of the app's own (one per create_app).

With ``serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder) before it starts the
workers: prometheus_client then keeps every worker's counters, histograms and gauges in memory-mapped files there,
and ``render()`` sums the files of all workers (and those of workers that died: their counts happened), so one
scrape of any worker counts every request. Gauges say how they combine (``multiprocess_mode``); the supervisor drops
a dead worker's live gauges. Collectors read at scrape time (this process's CPU and memory, the local engine's
batch) describe the worker that answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 60)
_PER_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


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
        # Breakers are shared through Redis: the latest reading of any live worker is the state.
        self.breaker_state = Gauge(
            "upcoach_breaker_state", "Circuit breaker state (0 closed, 1 half-open, 2 open)", ["backend"], registry=r,
            multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.queue_depth = Gauge("upcoach_local_queue_depth", "Local requests running or waiting", registry=r,
                                 multiprocess_mode="livemostrecent")  # fmt: skip
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

        # Request records (observability/records.py): rows not yet in the database, and rows given up, by reason.
        self.records_pending = Gauge("upcoach_records_pending", "Request records queued or being written", registry=r,
                                     multiprocess_mode="livesum")  # fmt: skip
        self.records_spooled = Gauge(
            "upcoach_records_spooled", "Request records in the local spool file, waiting for the database", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.records_dropped = Counter(
            "upcoach_records_dropped", "Request records not written: rejected, erased, spool_failed", ["reason"],
            registry=r,
        )  # fmt: skip

        # Operations (#18): what an operator's dashboard and alerts read besides the routing figures above.
        # Read at scrape time, in this process: process_cpu_seconds_total, process_resident_memory_bytes, python_info.
        self._scraped: list[Collector] = [ProcessCollector(registry=r), PlatformCollector(registry=r)]
        self.http_responses = Counter(
            "upcoach_http_responses", "HTTP responses by method, route template and status code",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.time_per_output_token = Histogram(
            "upcoach_time_per_output_token_seconds", "Decode time per generated token after the first, by mode",
            ["mode"], buckets=_PER_TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "upcoach_local_queue_wait_seconds", "Time a local request waited in the engine's queue before it ran",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.answer_rating = Histogram(
            "upcoach_answer_rating", "Answer ratings (1-5) users gave; sum/count is the average",
            buckets=(1, 2, 3, 4, 5), registry=r,
        )  # fmt: skip
        self.build_info = Gauge(
            "upcoach_build_info", "Always 1; the labels say which build and schema revision serve",
            ["version", "build", "schema_revision"], registry=r, multiprocess_mode="livemax",
        )  # fmt: skip

    def observe_output_tokens(self, mode: str, latency_s: float, first_token_s: float | None, tokens: int) -> None:
        """Time per output token: the time after the first token over the tokens that followed it."""
        if first_token_s is not None and tokens > 1 and latency_s > first_token_s:
            self.time_per_output_token.labels(mode=mode).observe((latency_s - first_token_s) / (tokens - 1))

    def watch_local(self, details: Callable[[], Mapping[str, object]]) -> None:
        """Expose the local engine's batch (llm/scheduler.py), read from ``details`` at every scrape."""
        collector = LocalBatchCollector(details)
        self.registry.register(collector)
        self._scraped.append(collector)

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROC_DIR_ENV)
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=directory)
        for collector in self._scraped:
            combined.register(collector)
        return generate_latest(combined)


# (engine detail, metric name, help, kind): the scheduler's live state as Prometheus series, one row per series.
LOCAL_BATCH_SERIES = (
    ("running", "upcoach_local_sequences_running", "Local sequences in the batch (prefilling or decoding)", "gauge"),
    ("waiting", "upcoach_local_sequences_waiting", "Local sequences waiting for a slot", "gauge"),
    ("batch_tokens", "upcoach_local_batch_tokens", "Tokens in the last llama_decode step", "gauge"),
    ("prefill_tokens_last_step", "upcoach_local_step_prefill_tokens", "Prompt tokens in the last step", "gauge"),
    ("decode_tokens_last_step", "upcoach_local_step_decode_tokens", "Decode tokens in the last step", "gauge"),
    ("step_ms_ewma", "upcoach_local_step_milliseconds", "Time of one decode step (EWMA)", "gauge"),
    ("kv_cells_reserved", "upcoach_local_kv_cells_reserved", "KV cells reserved by admitted sequences", "gauge"),
    ("kv_cells", "upcoach_local_kv_cells", "KV cells of the local context", "gauge"),
    ("queue_wait_ms_ewma", "upcoach_local_queue_wait_milliseconds", "Wait for a slot before prefill (EWMA)", "gauge"),
    ("estimated_wait_ms", "upcoach_local_estimated_wait_milliseconds", "Wait for a slot the router expects", "gauge"),
    ("steps_total", "upcoach_local_steps", "llama_decode steps", "counter"),
    ("prefill_tokens_total", "upcoach_local_prefill_tokens", "Prompt tokens prefilled", "counter"),
    ("decode_tokens_total", "upcoach_local_decode_tokens", "Tokens decoded", "counter"),
    ("admitted_total", "upcoach_local_admitted", "Sequences admitted into the batch", "counter"),
    ("prefix_cache_hits", "upcoach_local_prefix_cache_hits", "Sequences started from a cached prefix", "counter"),
)


class LocalBatchCollector(Collector):
    def __init__(self, details: Callable[[], Mapping[str, object]]) -> None:
        self._details = details

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        details = self._details()
        for key, name, text, kind in LOCAL_BATCH_SERIES:
            value = details.get(key)
            if not isinstance(value, int | float):
                continue
            if kind == "counter":
                yield CounterMetricFamily(name, text, value=float(value))
            else:
                yield GaugeMetricFamily(name, text, value=float(value))
