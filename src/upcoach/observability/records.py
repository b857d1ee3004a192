"""Per-request records, written in batches off the request path, without losing or resurrecting any.

The engine hands each finished request to ``submit`` (no I/O, never blocks); a background task inserts them in
batches. What happens to a record that is not simply written:

- the database refuses one row (a poison row): the batch is split until the row is alone, then it is set aside
  (logged, counted as dropped with reason "rejected") and every other row is written;
- the database is down: the queue goes to the spool file (observability/spool.py) at every retry (and at once
  when it reaches ``max_queued``), so a crash during an outage loses at most one retry interval of rows; the
  spool is replayed as soon as the database answers;
- the process is killed: every record is also appended to a write-ahead file the moment it is queued
  (spool.WriteAhead), which the next start moves into the spool, so an answered request keeps its record;
- the disk is full too: the rows stay in memory (up to twice ``max_queued``) until the database or the disk is back;
- shutdown: one last flush, bounded by ``stop_timeout``; whatever is still unwritten goes to the spool, which
  the next start (or the writer, as soon as the database answers) replays. Replays are idempotent on the id;
- the user was erased after the request started: refused by the erasure fence (storage/fences.py), counted as
  dropped with reason "erased"; ``purge`` also removes the user's rows from the queue and the spool.

Metrics: ``upcoach_records_pending`` (queued), ``upcoach_records_spooled`` and
``upcoach_records_dropped_total{reason}``; ``backlog`` (both) feeds /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from datetime import timedelta

from upcoach.observability.metrics import Metrics
from upcoach.observability.spool import Pending, Spool, WriteAhead
from upcoach.routing.engine import Outcome
from upcoach.storage.database import transient
from upcoach.storage.requests import RequestRecord, RequestRepository

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_QUEUED = 10_000
RETRY_SECONDS = 1.0
STOP_SECONDS = 10.0


class _Outage(Exception):
    """The database did not answer: keep the rows and try later."""


def to_pending(outcome: Outcome) -> Pending:
    record = to_record(outcome, outcome.user_id, outcome.endpoint)
    # The outcome is built when the request ends; it started latency_ms earlier.
    started_at = outcome.started_at or record.created_at - timedelta(milliseconds=outcome.latency_ms)
    return Pending(record, started_at)


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
        routing=outcome.routing,
        finish_reason=outcome.finish_reason[:32] if outcome.finish_reason else None,
    )


class RecordWriter:
    def __init__(
        self,
        repository: RequestRepository,
        spool: Spool,
        metrics: Metrics,
        *,
        max_queued: int = MAX_QUEUED,
        stop_timeout: float = STOP_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._repository = repository
        self._spool = spool
        self._ahead = WriteAhead(spool.folder)
        try:
            # Before anything of this process is noted: what the file holds was queued by one that was killed.
            self._ahead.recover(spool)
        except OSError:  # unreadable or a full disk: the file stays for the next start
            log.exception("could not recover the request record write-ahead file")
        self._metrics = metrics
        self._max_queued = max_queued
        self._stop_timeout = stop_timeout
        self._retry_seconds = retry_seconds
        self._queue: deque[Pending] = deque()
        self._inflight: list[Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._writing = asyncio.Lock()
        metrics.records_pending.set_function(lambda: len(self._queue) + len(self._inflight))
        metrics.records_spooled.set_function(lambda: self._spool.count)

    @property
    def backlog(self) -> int:
        """Records not yet in the database: queued, being written, or spooled."""
        return len(self._queue) + len(self._inflight) + self._spool.count

    async def start(self) -> None:
        """Replay what an earlier run spooled or had queued when it was killed (if the database answers), then
        write in the background."""
        try:
            await self._replay()
        except _Outage:
            log.warning("database unavailable at start: %d spooled request records wait", self._spool.count)
        except Exception:  # a spool that cannot be read must not keep the server from starting; it stays on disk
            log.exception("could not replay the request record spool in %s", self._spool.folder)
        self._task = asyncio.create_task(self._run(), name="record-writer")

    async def submit(self, outcome: Outcome) -> None:
        if len(self._queue) >= self._max_queued:
            # The database has been down for long: move the queue to disk (one write) instead of dropping rows.
            self._spill()
        pending = to_pending(outcome)
        self._ahead.note(pending)
        self._queue.append(pending)
        self._wakeup.set()

    def purge(self, user_id: str) -> int:
        """Erasure: drop the user's rows from the queue and the spool (a fence refuses the ones in flight)."""
        before = len(self._queue)
        self._queue = deque(item for item in self._queue if item.record.user_id != user_id)
        removed = before - len(self._queue) + self._spool.purge(user_id)
        self._ahead.purge(user_id)
        self._metrics.records_dropped.labels(reason="erased").inc(removed)
        return removed

    async def flush(self) -> None:
        """Write everything queued or spooled now; raises when the database does not answer (nothing is lost)."""
        try:
            if await self._drain():
                await self._replay()
                return
        except _Outage:
            pass
        raise ConnectionError("database unavailable: request records stay queued or spooled")

    async def _drain(self) -> bool:
        async with self._writing:  # the background loop and an explicit flush take turns
            return await self._drain_now()

    async def _drain_now(self) -> bool:
        while self._queue:
            batch = self._inflight = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            try:
                await self._write(batch)
            except BaseException as exc:  # an outage, or a stop that cut the write short: the rows stay queued
                self._queue.extendleft(reversed(batch))
                if isinstance(exc, _Outage):
                    return False
                raise
            finally:
                self._inflight = []
        self._ahead.settled()  # queue and flight empty: every record noted ahead is in the database
        return True

    async def _replay(self) -> None:
        async with self._writing:
            await self._replay_now()

    async def _replay_now(self) -> None:
        if not self._spool.count:
            return
        items = self._spool.take()
        for start in range(0, len(items), MAX_BATCH):
            await self._write(items[start : start + MAX_BATCH])  # an outage leaves the file for the next try
        self._spool.replayed()
        log.info("replayed %d spooled request records", len(items))

    async def _write(self, batch: Sequence[Pending]) -> None:
        """Write a batch; on failure split it to find the rows the database refuses, unless it is down."""
        try:
            refused = await self._repository.add_fenced([(item.record, item.started_at) for item in batch])
        except Exception as exc:
            if transient(exc) or not await self._reachable():
                raise _Outage from exc
            if len(batch) == 1:
                # Never the row itself in the log: ids and the error's class are enough to find it.
                log.error("request record %s refused by the database (%s); set aside", batch[0].record.id,
                          type(exc).__name__)  # fmt: skip
                self._metrics.records_dropped.labels(reason="rejected").inc()
                return
            middle = len(batch) // 2
            await self._write(batch[:middle])
            await self._write(batch[middle:])
            return
        if refused:
            self._metrics.records_dropped.labels(reason="erased").inc(len(refused))

    async def _reachable(self) -> bool:
        try:
            await self._repository.ping()
        except Exception:
            return False
        return True

    def _spill(self) -> None:
        items = list(self._queue)
        try:
            self._spool.append(items)
        except OSError as exc:
            # Disk full (or gone) while the database is down: the rows stay in memory until either comes back;
            # only beyond twice the queue's bound are the oldest given up.
            excess = len(self._queue) - 2 * self._max_queued
            log.error("could not spool %d request records (%s); kept in memory", len(items), exc)
            if excess > 0:
                for _ in range(excess):
                    self._queue.popleft()
                self._metrics.records_dropped.labels(reason="spool_failed").inc(excess)
            return
        if not self._inflight:
            self._ahead.settled()
        self._queue.clear()

    async def _run(self) -> None:
        was_healthy = True
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._stopping:
                break
            try:
                healthy = await self._drain()
                if healthy:
                    await self._replay()
            except _Outage:
                healthy = False
            except Exception:  # the writer must outlive any one surprise
                log.exception("request record writer failed; retrying")
                healthy = False
            if healthy != was_healthy:  # once per outage, not once per retry
                if healthy:
                    log.info("database available again: request records are written")
                else:
                    log.warning("database unavailable: %d request records wait", self.backlog)
            was_healthy = healthy
            if not healthy:
                # While the database is down, queued rows go to disk at every retry: a crash then loses at most
                # the rows of the last retry interval, not the whole outage's.
                if self._queue:
                    self._spill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._retry_seconds)
                self._wakeup.set()

    async def stop(self) -> None:
        """Stop the loop, flush once within ``stop_timeout`` and spool whatever could not be written."""
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout
        if self._task is not None:
            # The loop may be in the middle of a write to a database that hangs: it gets the same deadline.
            await asyncio.wait({self._task}, timeout=self._stop_timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            if not await asyncio.wait_for(self._drain(), max(0.0, deadline - loop.time())):
                log.warning("database unavailable at shutdown")
        except Exception:  # a timeout or anything else: the rows are still queued and go to the spool
            log.exception("request records not written at shutdown")
        if self._queue:
            log.warning("spooling %d request records to %s", len(self._queue), self._spool.path)
            self._spill()
        self._ahead.close()
