"""Per-request records, written in batches off the request path.

The engine hands each finished request to ``submit`` (no I/O, never blocks); a background task inserts them
in batches. On shutdown everything queued is flushed, so a clean stop loses nothing; a database outage keeps
rows queued (bounded) and retries instead of failing requests.
"""

from __future__ import annotations

import asyncio
import logging

from upcoach.observability.metrics import Metrics
from upcoach.routing.engine import Outcome
from upcoach.storage.requests import RequestRecord, RequestRepository

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_QUEUED = 100_000
RETRY_SECONDS = 1.0


def to_record(outcome: Outcome, user_id: str | None, endpoint: str) -> RequestRecord:
    return RequestRecord(
        id=outcome.request_id,
        user_id=user_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        privacy_level=outcome.privacy_level,
        decision=outcome.decision or "none",  # type: ignore[arg-type]
        processing_mode=outcome.processing_mode,
        backend=outcome.backend,
        reasons=list(outcome.reasons),
        fallback_used=outcome.fallback_used,
        outcome=outcome.outcome,
        error_code=outcome.error_code,
        latency_ms=outcome.latency_ms,
        first_token_ms=outcome.first_token_ms,
        prompt_tokens=outcome.usage.prompt_tokens,
        completion_tokens=outcome.usage.completion_tokens,
        cost_usd=outcome.cost_usd,
        cloud_cost_equivalent_usd=outcome.cloud_equivalent_usd,
        redactions=outcome.redactions,
        region=outcome.region,
    )


class RecordWriter:
    def __init__(self, repository: RequestRepository, metrics: Metrics | None = None) -> None:
        self._repository = repository
        self._metrics = metrics
        self._queue: list[RequestRecord] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="record-writer")

    async def submit(self, outcome: Outcome) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1  # the database has been down for a long time: keep the service alive
            if self._metrics is not None:
                self._metrics.records_dropped.inc()
            return
        self._queue.append(to_record(outcome, outcome.user_id, outcome.endpoint))
        self._show_backlog()
        self._wakeup.set()

    async def flush(self) -> None:
        while self._queue:
            batch = self._queue[:MAX_BATCH]
            await self._repository.add_many(batch)
            del self._queue[: len(batch)]
            self._show_backlog()

    def _show_backlog(self) -> None:
        if self._metrics is not None:
            self._metrics.record_backlog.set(len(self._queue))

    async def _run(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.flush()
            except Exception as exc:  # keep the rows and retry: a database blip must not lose records
                log.warning("could not write %d request records (%s); retrying", len(self._queue), exc)
                await asyncio.sleep(RETRY_SECONDS)
                self._wakeup.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await self.flush()
