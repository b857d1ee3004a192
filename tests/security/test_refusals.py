"""Refused credentials: the per-address brake, and one aggregated audit row per client address and minute, on
SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage import conftest as storage_fixtures
from tests.storage.outage import Outage
from upcoach.observability.audit import AuditLog
from upcoach.security import refusals as refusals_module
from upcoach.security.auth import AuthFailure
from upcoach.security.refusals import RefusalLog
from upcoach.security.throttle import FailureThrottle
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database

postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db

on_session_loop = pytest.mark.asyncio(loop_scope="session")
KEY = bytes(range(32))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(client: str, reason: str = "unknown_key", **extra: object) -> AuthFailure:
    return AuthFailure(reason, 401, "GET", "/v1/models", client, **extra)  # type: ignore[arg-type]


@on_session_loop
async def test_one_row_per_address_and_minute_with_counts(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), bytes(range(32)))
    clock = Clock(60 * 1_000_000 + 5)  # 5 s into a minute
    log = RefusalLog(audit, clock=clock)
    for _ in range(500):
        await log.record(refused("203.0.113.9"))
    await log.record(refused("203.0.113.9", "revoked_key", key_id="k1", user_id="u1", role="user"))
    await log.record(refused("198.51.100.4", "wrong_secret", key_id="k2", user_id="u2", role="service"))
    assert await log.flush() == 0  # the minute is not over: nothing written yet
    assert await audit.query(action="auth.refused") == []

    clock.now += 60  # the next minute
    await log.record(refused("203.0.113.9"))
    assert await log.flush() == 2  # the ended minute only
    first = {e.target: e for e in await audit.query(action="auth.refused")}
    assert set(first) == {"203.0.113.9", "198.51.100.4"}
    flood = first["203.0.113.9"].details
    assert flood["count"] == 501 and flood["reasons"] == {"unknown_key": 500, "revoked_key": 1}
    assert (flood["key_ids"], flood["user_ids"], flood["user_id"]) == (["k1"], ["u1"], "u1")
    assert flood["minute"] == "1971-11-26T10:40:00+00:00" and flood["statuses"] == {"401": 501}
    assert first["198.51.100.4"].actor == "anonymous" and first["198.51.100.4"].details["count"] == 1

    assert await log.flush(everything=True) == 1  # shutdown writes the open minute too
    rows = await audit.query(action="auth.refused")
    assert len(rows) == 3 and rows[-1].details["count"] == 1
    assert (await audit.verify()).ok


@on_session_loop
async def test_rotating_addresses_share_an_overflow_row(migrated_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refusals_module, "MAX_ADDRESSES", 3)
    audit = AuditLog(AuditRepository(migrated_db), bytes(range(32)))
    log = RefusalLog(audit, clock=Clock(60 * 2_000_000))
    for i in range(50):
        await log.record(refused(f"2001:db8::{i:x}"))
    assert await log.flush(everything=True) == 4
    rows = {e.target: e.details["count"] for e in await audit.query(action="auth.refused")}
    assert rows == {"2001:db8::0": 1, "2001:db8::1": 1, "2001:db8::2": 1, "*": 47}


class BrokenAudit:
    def __init__(self) -> None:
        self.calls = 0

    async def append(self, *args: object, **kwargs: object) -> None:
        self.calls += 1
        raise ConnectionError("database down")


async def test_a_row_that_cannot_be_written_is_kept_for_the_next_flush() -> None:
    audit = BrokenAudit()
    log = RefusalLog(audit, clock=Clock(60 * 3_000_000))  # type: ignore[arg-type]
    await log.record(refused("192.0.2.1"))
    assert await log.flush(everything=True) == 0
    assert await log.flush(everything=True) == 0
    assert audit.calls == 2  # tried again, not dropped


async def test_the_throttle_counts_per_address_within_its_window() -> None:
    clock = Clock(1000.0)
    throttle = FailureThrottle(attempts=3, window_seconds=60, clock=clock)
    for _ in range(3):
        assert await throttle.retry_after("a") is None
        await throttle.failed("a")
    assert await throttle.retry_after("a") == pytest.approx(60)
    assert await throttle.retry_after("b") is None  # per address
    clock.now += 30
    assert await throttle.retry_after("a") == pytest.approx(30)
    clock.now += 30
    assert await throttle.retry_after("a") is None


@on_session_loop
async def test_refusals_not_written_at_shutdown_reach_the_trail_after_the_next_start(
    database_url: str, migrated_db: Database, tmp_path: Path
) -> None:
    """The database is down when the server stops: the counts go to the spool file, not away."""
    outage = Outage(database_url, tmp_path)
    await outage.start()
    served = Database(outage.url)
    spool = tmp_path / "spool" / "refusals.jsonl"
    clock = Clock(60 * 4_000_000)
    try:
        log = RefusalLog(AuditLog(AuditRepository(served), KEY), clock=clock, spool=spool)
        await log.start()
        for _ in range(7):
            await log.record(refused("203.0.113.9", key_id="k1"))
        await outage.stop(served)
        await log.stop()
        assert spool.exists()
    finally:
        await served.dispose()
    await outage.restore()

    audit = AuditLog(AuditRepository(migrated_db), KEY)
    restarted = RefusalLog(audit, clock=clock, spool=spool)
    await restarted.start()
    await restarted.record(refused("203.0.113.9", "revoked_key", key_id="k2"))  # the same minute, after the restart
    await restarted.stop()
    rows = await audit.query(action="auth.refused")
    assert len(rows) == 1
    assert rows[0].details["count"] == 8 and rows[0].details["key_ids"] == ["k1", "k2"]
    assert not spool.exists()
    assert (await audit.verify()).ok
    await outage.stop()
