"""Erasure fences (storage/fences.py) on SQLite and PostgreSQL: a write that checked before an erasure is deleted by
it, a write that starts checking after it is refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import insert

from upcoach.storage.database import Database
from upcoach.storage.fences import Fences, refused
from upcoach.storage.requests import RequestRepository
from upcoach.storage.tables import RequestRecordRow, utc_now

on_session_loop = pytest.mark.asyncio(loop_scope="session")

ROW = {"user_id": "u1", "endpoint": "hybrid", "privacy_level": "standard", "decision": "local",
       "processing_mode": "local", "backend": "llamacpp", "reasons": [], "fallback_used": False, "outcome": "ok",
       "latency_ms": 1.0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
       "cloud_cost_equivalent_usd": 0.0}  # fmt: skip


async def erase(db: Database, user_id: str) -> int:
    """What DataRights.erase does for one kind: the fence first, then the delete."""
    await Fences(db).erect(user_id)
    return await RequestRepository(db).delete_for_user(user_id)


@on_session_loop
async def test_an_erasure_waits_for_a_write_in_flight_and_then_deletes_it(migrated_db: Database) -> None:
    fences = Fences(migrated_db)
    async with fences.guarded(["u1"]) as (conn, erased):
        assert erased == {}  # checked before the erasure: this write goes ahead
        erasure = asyncio.create_task(erase(migrated_db, "u1"))
        await asyncio.sleep(0.2)  # the erasure runs meanwhile (and must wait for this transaction)
        await conn.execute(insert(RequestRecordRow).values(id="in-flight", created_at=utc_now(), **ROW))
    assert await erasure == 1
    assert await RequestRepository(migrated_db).all_for_user("u1") == []


@on_session_loop
async def test_a_write_that_started_before_the_erasure_is_refused_after_it(migrated_db: Database) -> None:
    started = utc_now() - timedelta(seconds=1)
    erased_at = await Fences(migrated_db).erect("u1")
    assert await Fences(migrated_db).erased_at("u1") == erased_at
    async with Fences(migrated_db).guarded(["u1", "u2", None]) as (_, erased):
        assert refused(erased, "u1", started)
        assert not refused(erased, "u1", utc_now())  # a new request after the erasure is new data
        assert not refused(erased, "u2", started)
        assert not refused(erased, None, started)
