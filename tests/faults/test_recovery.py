"""Crash recovery without a hand: what a killed process leaves behind is settled by the next start.

Records: a writer whose process is killed (never stopped, nothing written yet) leaves its queue in the write-ahead
file, and the next writer on the same folder writes every one of those records. Model changes: downloads and jobs
a killed process was running are marked failed, partial files nobody will resume are removed, a URL download's
encrypted partial file is kept for its resume. Real databases (SQLite and PostgreSQL), real files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.observability.test_records import outcome, stored_ids, writer_for
from tests.storage import conftest as storage_fixtures
from upcoach.modelstore.recovery import FETCH_IDLE_SECONDS, recover
from upcoach.modelstore.registry import JobRepository, ModelRegistry
from upcoach.modelstore.store import PART_SUFFIX
from upcoach.storage.database import Database

postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db
on_session_loop = pytest.mark.asyncio(loop_scope="session")


@on_session_loop
async def test_records_queued_by_a_killed_process_are_written_by_the_next(
    migrated_db: Database, tmp_path: Path
) -> None:
    killed = writer_for(migrated_db, tmp_path)
    for request_id in ("answered-1", "answered-2", "answered-3"):
        await killed.submit(outcome(request_id))  # answered; its writer never ran: the process was killed here
    del killed

    writer = writer_for(migrated_db, tmp_path)
    await writer.start()
    await writer.flush()
    await writer.stop()
    assert await stored_ids(migrated_db) == {"answered-1", "answered-2", "answered-3"}


@on_session_loop
async def test_model_changes_a_killed_process_left_are_settled(migrated_db: Database, tmp_path: Path) -> None:
    models = tmp_path / "models"
    store = models / "store"
    store.mkdir(parents=True)
    registry = ModelRegistry(migrated_db)
    from_file = await registry.add(name="a", version="1", source="/tmp/a.gguf", sha256="", path=str(store / "a.ucm"))
    from_url = await registry.add(name="b", version="1", source="https://example.org/b.gguf", sha256="",
                                  path=str(store / "b.ucm"))  # fmt: skip
    job = await JobRepository(migrated_db).create("/tmp/a.gguf", model_id=from_file.id, status="running")
    for name in (from_file.id, from_url.id, "nobody"):
        (store / f"{name}{PART_SUFFIX}").write_bytes(b"partial")
    stale_fetch = models / "gemma.gguf.partial"
    stale_fetch.write_bytes(b"partial")
    old = time.time() - FETCH_IDLE_SECONDS - 60
    os.utime(stale_fetch, (old, old))
    fresh_fetch = models / "other.gguf.partial"  # another process may be writing it right now
    fresh_fetch.write_bytes(b"partial")

    result = await recover(migrated_db, models)

    assert (result.jobs, result.versions) == (1, 2)
    assert (await JobRepository(migrated_db).get(job.id)).status == "failed"
    assert {(await registry.get(v.id)).status for v in (from_file, from_url)} == {"failed"}
    assert not (store / f"{from_file.id}{PART_SUFFIX}").exists()
    assert not (store / f"nobody{PART_SUFFIX}").exists()
    assert (store / f"{from_url.id}{PART_SUFFIX}").exists()  # resumed by the next pull of the same URL
    assert not stale_fetch.exists() and fresh_fetch.exists()
    assert await recover(migrated_db, models) == type(result)()  # a second start finds nothing left to do
