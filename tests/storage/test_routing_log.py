"""Logged routing decisions joined with their later outcomes (routing/learned_data.py), on SQLite and PostgreSQL:
what ``upcoach router train`` and ``evaluate`` read from the request records."""

from __future__ import annotations

from datetime import timedelta

import pytest

from upcoach.routing.learned import dense_names
from upcoach.routing.learned_data import logged_rows
from upcoach.storage.database import Database
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.requests import RequestRecord, RequestRepository
from upcoach.storage.tables import utc_now


def _record(id: str, minutes: int, *, side: str = "local", forced: bool = False, vector: bool = True,
            rephrase: bool = False, fallback: bool = False, propensity: float = 0.95) -> RequestRecord:  # fmt: skip
    routing: dict[str, object] = {"side": side, "forced": forced, "propensity": propensity, "explored": False,
                                  "router": None, "score": 0.2, "rephrase": rephrase}  # fmt: skip
    if vector:
        routing["vector"] = [0.5] * len(dense_names())
        routing["text_logit"] = -0.25
    return RequestRecord(id=id, user_id="alice", endpoint="hybrid", privacy_level="public", decision=side,  # type: ignore[arg-type]
                         processing_mode=side, backend=side, outcome="ok", latency_ms=10.0,  # type: ignore[arg-type]
                         created_at=utc_now() + timedelta(minutes=minutes), fallback_used=fallback, routing=routing,
                         finish_reason="stop")  # fmt: skip


async def test_outcomes_join_the_logged_free_choices(migrated_db: Database) -> None:
    requests = RequestRepository(migrated_db)
    await requests.add_many([
        _record("rated-good", 0),
        _record("rated-bad", 1, side="cloud", propensity=0.05),
        _record("rephrased-after", 2),  # the next request restates it: the answer did not help
        _record("restatement", 3, rephrase=True),
        _record("fell-back", 4, fallback=True),
        _record("forced", 5, forced=True),  # privacy or availability decided: says nothing about a router
        _record("no-consent", 6, vector=False),  # no analytics opt-in: no vector was kept
    ])  # fmt: skip
    feedback = FeedbackRepository(migrated_db)
    await feedback.upsert("rated-good", "alice", 5, None, started_at=utc_now())
    await feedback.upsert("rated-bad", "alice", 2, None, started_at=utc_now())
    rows = await logged_rows(migrated_db)
    assert [(r.side, r.reward, r.propensity) for r in rows] == [
        ("local", 1.0, 0.95), ("cloud", 0.0, 0.05), ("local", 0.0, 0.95), ("local", 1.0, 0.95), ("local", 0.0, 0.95)
    ]  # fmt: skip
    assert all(len(r.vector) == len(dense_names()) and r.text_logit == pytest.approx(-0.25) for r in rows)
    stored = await requests.get("rated-good")
    assert stored is not None and stored.routing is not None and stored.finish_reason == "stop"
