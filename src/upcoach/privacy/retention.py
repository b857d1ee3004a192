"""Retention: request records older than their user's ``retention_days`` are deleted, by a background task in
the server (once at start, then every ``UPCOACH_RETENTION_INTERVAL_SECONDS``) and by ``upcoach privacy retention``.
The same rounds forget erasure fences older than ``UPCOACH_ERASURE_FENCE_DAYS`` (storage/fences.py).

Several workers may run the job at once; that is harmless (deletes are idempotent), only wasted work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from upcoach.storage.fences import Fences
from upcoach.storage.privacy import PrivacyRepository
from upcoach.storage.tables import utc_now

log = logging.getLogger(__name__)


class RetentionJob:
    def __init__(
        self,
        repository: PrivacyRepository,
        default_days: int,
        interval_seconds: float,
        *,
        clock: Callable[[], datetime] = utc_now,
        fences: Fences | None = None,
        fence_days: int = 30,
    ) -> None:
        self._repository = repository
        self._fences = fences
        self._fence_horizon = timedelta(days=fence_days)
        self._default_days = default_days
        self._interval = interval_seconds
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> int:
        """Delete every expired request record now; returns how many."""
        now = self._clock()
        deleted = await self._repository.delete_expired_records(self._default_days, now)
        if deleted:
            log.info("retention: deleted %d expired request records", deleted)
        if self._fences is not None:
            pruned = await self._fences.prune(now - self._fence_horizon)
            if pruned:
                log.info("retention: forgot %d erasure fences older than %s", pruned, self._fence_horizon)
        return deleted

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="privacy-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a database blip must not end the job: the next round catches up
                log.exception("retention run failed; retrying in %.0f s", self._interval)
            await asyncio.sleep(self._interval)
