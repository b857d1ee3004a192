"""Every per-user writer that can race an erasure, on SQLite and PostgreSQL: the erasure lands while the write is
under way (after its checks, before its insert), and nothing of the erased user is stored afterwards.

The moment is forced through the writer's own collaborators (the guard inspecting a journal entry, the analytics
opt-in lookup, the served-request lookup), since two real requests cannot be made to meet there reliably."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from upcoach.coaching.journal import Journal
from upcoach.coaching.ratings import Ratings
from upcoach.errors import DataErased, NotFound
from upcoach.experiments.assignment import Variant
from upcoach.experiments.service import Experiments, Metric
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.privacy.grants import Grants
from upcoach.privacy.retention import RetentionJob
from upcoach.routing.factory import build_guard
from upcoach.security.vault import UserKeyVault
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.devices import IdempotencyRepository
from upcoach.storage.experiments import ExperimentRepository
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.fences import Fences
from upcoach.storage.grants import GrantRepository
from upcoach.storage.journal import JournalRepository
from upcoach.storage.privacy import PrivacyRepository
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import (
    AnswerFeedbackRow,
    CoachGrantRow,
    ErasureFenceRow,
    ExperimentEventRow,
    ExperimentExposureRow,
    IdempotencyRow,
    JournalEntryRow,
    utc_now,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def rows(db: Database, table: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def erasure(db: Database, erase: Callable[[str], Awaitable[int]]) -> Callable[[str], Awaitable[None]]:
    """What DataRights.erase does for one area: the fence first, then the area's delete."""

    async def run(user_id: str) -> None:
        await Fences(db).erect(user_id)
        await erase(user_id)

    return run


async def test_a_journal_entry_being_saved_when_the_user_erases_is_not_stored(migrated_db: Database) -> None:
    guard = build_guard(Metrics(), AuditLog(AuditRepository(migrated_db), os.urandom(32)))
    journal = Journal(JournalRepository(migrated_db), UserKeyVault(migrated_db, os.urandom(32)), lambda: None,
                      guard=guard)  # fmt: skip
    erase = erasure(migrated_db, journal.erase)
    inspect = guard.check

    async def inspect_then_erasure(*args: object, **kwargs: object) -> object:
        result = await inspect(*args, **kwargs)  # type: ignore[arg-type]
        await erase("u1")  # the user's DELETE /api/privacy/data arrives meanwhile
        return result

    guard.check = inspect_then_erasure  # type: ignore[method-assign]
    with pytest.raises(DataErased):
        await journal.add("u1", "A calm day, I walked to work and slept well.", utc_now(), 4)
    assert await rows(migrated_db, JournalEntryRow) == 0
    guard.check = inspect  # type: ignore[method-assign]
    await journal.add("u1", "A new entry after the erasure is new data.", utc_now(), 3)
    assert await rows(migrated_db, JournalEntryRow) == 1


async def test_experiment_exposures_and_events_racing_an_erasure_are_not_stored(migrated_db: Database) -> None:
    repository = ExperimentRepository(migrated_db)
    erase = erasure(migrated_db, repository.delete_for_user)

    async def opted_in_then_erased(user_id: str) -> bool:
        await erase(user_id)
        return True

    experiments = Experiments(repository, opted_in_then_erased)
    await experiments.create("chips", "", [Variant("a", 1, {}), Variant("b", 1, {})], [Metric("clicked")], "admin")
    assert (await experiments.assignment("chips", "u1")).stored is False
    assert await experiments.record_event("chips", "u1", "clicked", 1) is False
    assert await rows(migrated_db, ExperimentExposureRow) == 0
    assert await rows(migrated_db, ExperimentEventRow) == 0


async def test_a_rating_racing_an_erasure_is_not_stored(migrated_db: Database) -> None:
    feedback = FeedbackRepository(migrated_db)
    erase = erasure(migrated_db, feedback.delete_for_user)

    class ErasedMeanwhile(RequestRepository):
        async def served_to(self, request_id: str, user_id: str) -> RequestRecord | None:
            found = await super().served_to(request_id, user_id)
            await erase(user_id)
            return found

    requests = ErasedMeanwhile(migrated_db)
    await requests.add(RequestRecord(id="r1", user_id="u1", endpoint="hybrid", privacy_level="standard",
                                     decision="local", processing_mode="local", backend="llamacpp", outcome="ok",
                                     latency_ms=1.0))  # fmt: skip
    ratings = Ratings(feedback, requests, UserKeyVault(migrated_db, os.urandom(32)))
    with pytest.raises(NotFound):
        await ratings.rate("u1", "r1", 5, "helpful")
    assert await rows(migrated_db, AnswerFeedbackRow) == 0


async def test_a_grant_given_while_the_user_erases_is_not_stored(migrated_db: Database) -> None:
    repository = GrantRepository(migrated_db)
    grants = Grants(repository, AuditLog(AuditRepository(migrated_db), os.urandom(32)))
    erase = erasure(migrated_db, grants.erase)
    count_live = repository.count_live

    async def count_then_erasure(*args: object, **kwargs: object) -> int:
        result = await count_live(*args, **kwargs)  # type: ignore[arg-type]
        await erase("u1")  # the user's DELETE /api/privacy/data arrives after the checks, before the insert
        return result

    repository.count_live = count_then_erasure  # type: ignore[method-assign]
    with pytest.raises(DataErased):
        await grants.give("u1", "coach-1", ["journal"], None, actor="u1", actor_role="user")
    assert await rows(migrated_db, CoachGrantRow) == 0
    repository.count_live = count_live  # type: ignore[method-assign]
    await grants.give("u1", "coach-1", ["journal"], None, actor="u1", actor_role="user")  # new consent, kept
    assert await rows(migrated_db, CoachGrantRow) == 1


async def test_an_idempotent_answer_completed_after_the_erasure_is_dropped(migrated_db: Database) -> None:
    answers = IdempotencyRepository(migrated_db)
    started = utc_now()
    row = IdempotencyRow(scope="caller", key="k1", fingerprint="f", created_at=started)
    assert await answers.claim(row, started - timedelta(days=1), started - timedelta(minutes=5)) is None
    await Fences(migrated_db).erect("u1")  # the erasure lands while the POST runs
    stored = await answers.complete("caller", "k1", (201, "application/json", b"sealed"), user_id="u1",
                                    started_at=started)  # fmt: skip
    assert not stored and await rows(migrated_db, IdempotencyRow) == 0
    later = utc_now()
    row = IdempotencyRow(scope="caller", key="k2", fingerprint="f", created_at=later)
    assert await answers.claim(row, later - timedelta(days=1), later - timedelta(minutes=5)) is None
    assert await answers.complete("caller", "k2", (201, None, b"sealed"), user_id="u1", started_at=later)
    assert [answer["key"] for answer in await answers.stored_for("u1")] == ["k2"]
    assert await answers.delete_for_user("u1") == 1 and await rows(migrated_db, IdempotencyRow) == 0


async def test_fences_past_the_horizon_are_pruned_by_the_retention_job(migrated_db: Database) -> None:
    fences = Fences(migrated_db)
    await fences.erect("old")
    await fences.erect("recent")
    async with migrated_db.engine.begin() as conn:
        await conn.execute(
            update(ErasureFenceRow)
            .where(ErasureFenceRow.user_id == "old")
            .values(erased_at=utc_now() - timedelta(days=31))
        )
    job = RetentionJob(PrivacyRepository(migrated_db), 365, 3600, fences=fences, fence_days=30)
    await job.run_once()
    assert await fences.erased_at("old") is None
    assert await fences.erased_at("recent") is not None
    without = RetentionJob(PrivacyRepository(migrated_db), 365, 3600, fence_days=1)  # no fences given: none pruned
    await without.run_once()
    assert await fences.erased_at("recent") is not None
