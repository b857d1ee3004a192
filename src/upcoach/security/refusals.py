"""Refused credentials from outside: a brake per client address before authentication, and aggregated audit rows.

Every refused credential used to append its own HMAC-chained audit row under the database-wide append lock, before
any rate limit applied: anyone could flood the chain (and every writer queued behind it). Now:

- ``FailureThrottle`` (security/throttle.py): at most ``UPCOACH_AUTH_REFUSALS_PER_MINUTE`` refusals per client
  address a minute; past that the address gets 429 ``auth_throttled`` with ``Retry-After`` before its credentials
  are even looked at (no database read). In memory, per process, bounded.
- ``RefusalLog``: the Authenticator's failure hook. It only counts in memory; a background task writes one
  ``auth.refused`` row per client address per minute (counts by reason, status and path, the key ids and users
  named), when the minute is over, and everything left at shutdown. More than ``MAX_ADDRESSES`` addresses in one
  minute (an attacker rotating addresses) share one overflow row, so the rows per minute stay bounded too.
  Counts that cannot be written at shutdown (the database is down) go to ``spool`` (one JSON line per address and
  minute, fsync'd) and are counted again by the next start, so they reach the trail late rather than never.

The client address is the TCP peer's. Behind a reverse proxy set ``UPCOACH_TRUSTED_PROXIES`` to the proxy's
addresses: only then is ``X-Forwarded-For`` believed, and only from those peers (create_app).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upcoach.observability.audit import AuditLog
from upcoach.observability.spool import append_lines
from upcoach.security.auth import AuthFailure

log = logging.getLogger(__name__)

# Distinct addresses with their own row in one minute; the rest share the overflow row (target "*").
MAX_ADDRESSES = 1000
OVERFLOW = "*"
# Key ids, users and paths listed per row (the counts are always complete).
MAX_LISTED = 10
FLUSH_SECONDS = 10.0


def _add_listed(values: list[str], value: str | None) -> None:
    if value is not None and value not in values and len(values) < MAX_LISTED:
        values.append(value)


@dataclass
class _Tally:
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    paths: list[str] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)  # accounts the refused credentials named

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "reasons": dict(self.reasons), "statuses": dict(self.statuses),
                "paths": self.paths, "key_ids": self.key_ids, "users": self.users}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Tally:
        return cls(int(data["count"]), Counter(data["reasons"]), Counter(data["statuses"]), list(data["paths"]),
                   list(data["key_ids"]), list(data["users"]))  # fmt: skip

    def merge(self, other: _Tally) -> None:
        self.count += other.count
        self.reasons.update(other.reasons)
        self.statuses.update(other.statuses)
        for mine, theirs in ((self.paths, other.paths), (self.key_ids, other.key_ids), (self.users, other.users)):
            for value in theirs:
                _add_listed(mine, value)

    def add(self, failure: AuthFailure) -> None:
        self.count += 1
        self.reasons[failure.reason] += 1
        self.statuses[str(failure.status)] += 1
        _add_listed(self.paths, failure.path)
        _add_listed(self.key_ids, failure.key_id)
        _add_listed(self.users, failure.user_id)


class RefusalLog:
    """Counts refusals per (client address, minute) and writes each as one audit row once its minute is over."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        flush_seconds: float = FLUSH_SECONDS,
        spool: Path | None = None,
    ) -> None:
        self._audit = audit
        self._spool = spool
        self.clock = clock
        self._flush_seconds = flush_seconds
        self._tallies: dict[tuple[int, str], _Tally] = {}
        self._addresses: Counter[int] = Counter()  # distinct addresses per minute
        self._task: asyncio.Task[None] | None = None

    async def record(self, failure: AuthFailure) -> None:
        """The AuthFailureHook: no I/O, so a flood of refusals costs a dictionary update each."""
        minute = int(self.clock() // 60)
        client = failure.client or "unknown"
        key = (minute, client)
        if key not in self._tallies:
            if self._addresses[minute] >= MAX_ADDRESSES:
                key = (minute, OVERFLOW)
            else:
                self._addresses[minute] += 1
        self._tallies.setdefault(key, _Tally()).add(failure)

    async def flush(self, *, everything: bool = False) -> int:
        """Write the rows of every minute that is over (or of all minutes); returns the rows written. A row that
        cannot be written stays to be tried again."""
        current = int(self.clock() // 60)
        written = 0
        for key in sorted(self._tallies):
            minute, client = key
            if minute >= current and not everything:
                continue
            tally = self._tallies[key]
            try:
                await self._write(minute, client, tally)
            except Exception:
                log.exception("could not record %d refused requests from %s", tally.count, client)
                continue
            del self._tallies[key]
            written += 1
        for minute in [m for m in self._addresses if m < current or everything]:
            if not any(m == minute for m, _ in self._tallies):
                del self._addresses[minute]
        return written

    async def _write(self, minute: int, client: str, tally: _Tally) -> None:
        details: dict[str, object] = {
            "client": client,
            "minute": datetime.fromtimestamp(minute * 60, UTC).isoformat(),
            "count": tally.count,
            "reasons": dict(tally.reasons),
            "statuses": dict(tally.statuses),
            "paths": tally.paths,
            "key_ids": tally.key_ids,
            "user_ids": tally.users,
        }
        if len(tally.users) == 1:
            details["user_id"] = tally.users[0]  # so the user finds it in their own export
        # Nobody authenticated: the actor is unknown, whichever accounts the refused credentials named.
        await self._audit.append("anonymous", "none", "auth.refused", target=client, details=details)

    async def start(self) -> None:
        self._load_spool()
        self._task = asyncio.create_task(self._run(), name="refusal-log")

    def _load_spool(self) -> None:
        """Count again what an earlier run could not write; it is written with the next flush."""
        if self._spool is None or not self._spool.exists():
            return
        for line in self._spool.read_text(encoding="utf-8").splitlines():
            try:
                data = json.loads(line)
                key, tally = (int(data["minute"]), str(data["client"])), _Tally.from_json(data["tally"])
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line in %s skipped", self._spool)
                continue
            self._tallies.setdefault(key, _Tally()).merge(tally)
        self._spool.unlink()

    def _write_spool(self) -> None:
        if self._spool is None or not self._tallies:
            return
        lines = [json.dumps({"minute": minute, "client": client, "tally": tally.to_json()}) + "\n"
                 for (minute, client), tally in sorted(self._tallies.items())]  # fmt: skip
        append_lines(self._spool, lines)
        log.warning("%d refusal rows could not be written: kept in %s for the next start", len(lines), self._spool)
        self._tallies.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(everything=True)
        self._write_spool()
