"""Every per-user writer that can race an erasure, on SQLite and PostgreSQL: the erasure lands while the write is
under way (after its checks, before its insert), and nothing of the erased user is stored afterwards.

The moment is forced through the writer's own collaborators (the guard inspecting a journal entry, the analytics
opt-in lookup, the served-request lookup), since two real requests cannot be made to meet there reliably."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select

from upcoach.coaching.journal import Journal
from upcoach.coaching.ratings import Ratings
from upcoach.errors import DataErased, NotFound
from upcoach.experiments.assignment import Variant
from upcoach.experiments.service import Experiments, Metric
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.routing.factory import build_guard
from upcoach.security.vault import UserKeyVault
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.experiments import ExperimentRepository
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.fences import Fences
from upcoach.storage.journal import JournalRepository
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import (
    AnswerFeedbackRow,
    ExperimentEventRow,
    ExperimentExposureRow,
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
