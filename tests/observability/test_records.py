"""The request-record writer (observability/records.py) on SQLite and the real PostgreSQL: poison rows, a database
stopped mid-run, the spool and its replay, erasure fences, and /readyz's backlog check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.storage import conftest as storage_fixtures
from tests.storage.outage import Outage
from upcoach.app import _register_core_rights
from upcoach.config import Settings
from upcoach.llm.base import Usage
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter, to_pending, to_record
from upcoach.observability.spool import Spool, decode, encode
from upcoach.privacy.rights import DataRights
from upcoach.privacy.settings import PrivacyService
from upcoach.routing.engine import Outcome
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.fences import Fences
from upcoach.storage.requests import RequestRepository
from upcoach.storage.tables import utc_now

postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db

on_session_loop = pytest.mark.asyncio(loop_scope="session")
KEY = bytes(range(32))


def outcome(
    request_id: str, user_id: str | None = "u1", *, started_at: datetime | None = None, **fields: object
) -> Outcome:
    values: dict[str, object] = {
        "request_id": request_id, "text": "answer", "processing_mode": "local", "decision": "local",
        "backend": "llamacpp", "model": "qwen", "reasons": ["short"], "fallback_used": False, "finish_reason": "stop",
        "latency_ms": 40.0, "first_token_ms": 5.0, "usage": Usage(10, 5), "cost_usd": 0.0,
        "cloud_equivalent_usd": 0.001, "privacy_level": "standard", "user_id": user_id, "started_at": started_at,
    }  # fmt: skip
    values.update(fields)
    return Outcome(**values)  # type: ignore[arg-type]


def dropped(metrics: Metrics, reason: str) -> float:
    registry: CollectorRegistry = metrics.registry
    return registry.get_sample_value("upcoach_records_dropped_total", {"reason": reason}) or 0.0


def writer_for(db: Database, tmp: Path, metrics: Metrics | None = None, **options: float) -> RecordWriter:
    return RecordWriter(RequestRepository(db), Spool(tmp / "spool"), metrics or Metrics(), **options)  # type: ignore[arg-type]


async def stored_ids(db: Database) -> set[str]:
    return {record.id for record in await RequestRepository(db).list(limit=1000)}


@on_session_loop
async def test_poison_row_is_set_aside_and_never_blocks_the_rest(migrated_db: Database, tmp_path: Path) -> None:
    metrics = Metrics()
    writer = writer_for(migrated_db, tmp_path, metrics)
    # backend is NOT NULL: the database itself refuses this row, on SQLite and PostgreSQL alike.
    for item in (outcome("good-1"), outcome("poison", backend=None), outcome("good-2"), outcome("good-3")):
        await writer.submit(item)
    await writer.flush()
    assert await stored_ids(migrated_db) == {"good-1", "good-2", "good-3"}
    assert dropped(metrics, "rejected") == 1
    assert writer.backlog == 0

    await writer.submit(outcome("after"))  # the writer goes on: nothing stays stuck behind the poison row
    await writer.flush()
    assert "after" in await stored_ids(migrated_db)
    assert metrics.registry.get_sample_value("upcoach_records_pending") == 0


@on_session_loop
async def test_database_stopped_mid_run_spools_and_the_next_start_replays(database_url: str, migrated_db: Database,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    outage = Outage(database_url, tmp_path)
    await outage.start()
    served = Database(outage.url)
    try:
        writer = writer_for(served, tmp_path, stop_timeout=3, retry_seconds=0.05)
        await writer.start()
        await writer.submit(outcome("before"))
        await writer.flush()

        await outage.stop(served)
        for n in range(3):
            await writer.submit(outcome(f"during-{n}"))
        with pytest.raises(ConnectionError):
            await writer.flush()  # the rows stay queued, nothing is lost or dropped
        assert writer.backlog == 3
        await writer.stop()  # database still down: bounded wait, then the spool

        spool = tmp_path / "spool" / "records.jsonl"
        lines = spool.read_text().splitlines()
        assert sorted(json.loads(line)["record"]["id"] for line in lines) == ["during-0", "during-1", "during-2"]
        assert Spool(tmp_path / "spool").count == 3
    finally:
        await served.dispose()

    await outage.restore()
    # One spooled row already reached the database (a replay interrupted earlier): not an error the second time.
    spooled_twice = outcome("during-1")
    await RequestRepository(migrated_db).add_fenced([(to_record(spooled_twice, "u1", "hybrid"), utc_now())])
    restarted = Database(outage.url)
    try:
        metrics = Metrics()
        writer = writer_for(restarted, tmp_path, metrics)
        await writer.start()
        assert await stored_ids(migrated_db) == {"before", "during-0", "during-1", "during-2"}
        assert writer.backlog == 0
        assert not spool.exists()
        assert dropped(metrics, "rejected") == 0
        await writer.stop()
    finally:
        await restarted.dispose()
        await outage.stop()


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the background writer to get there (a generous bound only turns a hang into a failure)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer never got there")


@on_session_loop
async def test_a_crash_during_an_outage_loses_nothing_already_spooled(database_url: str, migrated_db: Database,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    outage = Outage(database_url, tmp_path)
    await outage.start()
    served = Database(outage.url)
    try:
        writer = writer_for(served, tmp_path, retry_seconds=0.05)
        await writer.start()
        await outage.stop(served)
        for n in range(3):
            await writer.submit(outcome(f"r{n}"))
        await until(lambda: Spool(tmp_path / "spool").count == 3)  # on disk while the database is still down
        writer._task.cancel()  # type: ignore[union-attr]  # the process dies: no stop(), no last flush
    finally:
        await served.dispose()
    await outage.restore()
    restarted = writer_for(migrated_db, tmp_path)
    await restarted.start()
    assert await stored_ids(migrated_db) == {"r0", "r1", "r2"}
    await restarted.stop()
    await outage.stop()


@on_session_loop
async def test_the_spool_is_replayed_as_soon_as_the_database_is_back(database_url: str, migrated_db: Database,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    outage = Outage(database_url, tmp_path)
    await outage.start()
    served = Database(outage.url)
    try:
        writer = writer_for(served, tmp_path, retry_seconds=0.05)
        await writer.start()
        await outage.stop(served)
        await writer.submit(outcome("during"))
        await until(lambda: Spool(tmp_path / "spool").count == 1)
        await outage.restore()
        await until(lambda: writer.backlog == 0)  # no restart needed
        assert await stored_ids(migrated_db) == {"during"}
        assert not (tmp_path / "spool" / "records.jsonl").exists()
        await writer.stop()
    finally:
        await served.dispose()
        await outage.stop()


@on_session_loop
async def test_full_queue_goes_to_the_spool_instead_of_being_dropped(database_url: str, migrated_db: Database,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    outage = Outage(database_url, tmp_path)
    await outage.start()
    served = Database(outage.url)
    metrics = Metrics()
    try:
        writer = writer_for(served, tmp_path, metrics, max_queued=2, stop_timeout=1)
        await outage.stop(served)
        for n in range(5):
            await writer.submit(outcome(f"r{n}"))
        assert Spool(tmp_path / "spool").count == 4  # twice a full queue of two went to disk
        assert writer.backlog == 5
        assert dropped(metrics, "spool_failed") == 0
        await writer.stop()
    finally:
        await served.dispose()
    await outage.restore()
    writer = writer_for(migrated_db, tmp_path)
    await writer.start()
    assert await stored_ids(migrated_db) == {f"r{n}" for n in range(5)}
    await writer.stop()
    await outage.stop()


async def _rights(db: Database, tmp: Path, writer: RecordWriter) -> DataRights:
    """Data rights wired as create_app wires them (app._register_core_rights, the fence first)."""
    audit = AuditLog(AuditRepository(db), KEY)
    rights = DataRights(audit, KEY, fences=Fences(db))
    _register_core_rights(rights, PrivacyService(db, audit, Settings(data_dir=tmp, load_model=False)),
                          RequestRepository(db), writer)  # fmt: skip
    return rights


@on_session_loop
async def test_erasure_right_after_a_request_leaves_no_record_behind(migrated_db: Database, tmp_path: Path) -> None:
    metrics = Metrics()
    # Another process spooled one of theirs; another still has a request running (it ends after the erasure).
    Spool(tmp_path / "spool").append([to_pending(outcome("spooled", "u1")), to_pending(outcome("spooled-u2", "u2"))])
    writer = writer_for(migrated_db, tmp_path, metrics)
    rights = await _rights(migrated_db, tmp_path, writer)
    # The request was answered; its record waits in the queue when the user erases their data.
    await writer.submit(outcome("queued", "u1"))
    await writer.submit(outcome("other-user", "u2"))
    running_since = utc_now() - timedelta(seconds=2)

    await rights.erase("u1", "u1", "user")
    await writer.submit(outcome("in-flight", "u1", started_at=running_since))
    await writer.submit(outcome("after-erasure", "u1", started_at=utc_now()))
    await writer.start()
    await writer.flush()
    await writer.stop()

    assert await stored_ids(migrated_db) == {"other-user", "spooled-u2", "after-erasure"}
    assert dropped(metrics, "erased") == 3  # queued and spooled purged, the running one fenced


@on_session_loop
async def test_fence_refuses_a_write_from_another_process_after_the_erasure(migrated_db: Database,
                                                                             tmp_path: Path) -> None:  # fmt: skip
    """The erasing process cannot purge another's queue: the fence in the database stops that record."""
    metrics = Metrics()
    elsewhere = writer_for(migrated_db, tmp_path / "other", metrics)
    await elsewhere.submit(outcome("other-process", "u1"))
    rights = await _rights(migrated_db, tmp_path, writer_for(migrated_db, tmp_path))
    await rights.erase("u1", "u1", "user")
    await elsewhere.flush()
    assert await RequestRepository(migrated_db).all_for_user("u1") == []
    assert dropped(metrics, "erased") == 1


@on_session_loop
async def test_routing_log_and_finish_reason_reach_the_table_and_survive_the_spool(migrated_db: Database,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """Issue 20: the durable writer keeps how the side was chosen (numbers and flags, no text), also via the spool."""
    routing = {"side": "cloud", "forced": False, "propensity": 0.05, "explored": True, "router": "v1", "score": 0.31,
               "rephrase": False, "vector": [1.0, 0.25], "text_logit": -0.5}  # fmt: skip
    item = to_pending(outcome("routed", routing=routing, finish_reason="length"))
    assert decode(encode(item)).record.routing == routing
    writer = writer_for(migrated_db, tmp_path)
    await writer.start()
    try:
        await writer.submit(outcome("routed", routing=routing, finish_reason="length"))
        await writer.flush()
    finally:
        await writer.stop()
    record = await RequestRepository(migrated_db).get("routed")
    assert record is not None and record.routing == routing and record.finish_reason == "length"
