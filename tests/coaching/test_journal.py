"""The voice journal at rest and in processing: ciphertext only in the database (SQLite and PostgreSQL), a wrong
master key reads nothing, erasure shreds the key, local sentiment and themes, pending insights completed later."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.fakes.fault_server import FaultServer
from upcoach.coaching.journal import Journal
from upcoach.coaching.ratings import Ratings
from upcoach.coaching.sentiment import analyse, detect_language
from upcoach.coaching.themes import themes_of
from upcoach.config import Settings
from upcoach.errors import DataKeyUnavailable, NotFound
from upcoach.llm.base import Backend
from upcoach.llm.openai_compat import OpenAICompatBackend
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.routing.factory import build_guard
from upcoach.security.vault import DataKeyMissing, UserKeyVault, master_key_from_settings, parse_master_key
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.feedback import FeedbackRepository
from upcoach.storage.journal import JournalRepository
from upcoach.storage.requests import RequestRecord, RequestRepository

on_session_loop = pytest.mark.asyncio(loop_scope="session")

TRANSCRIPT = (
    "Today my manager moved the product launch deadline again and I felt anxious all afternoon. "
    "I slept badly because I kept replaying the meeting in my head. Tomorrow I want to ask Priya "
    "for help with the client report and go for a walk before work to clear my mind."
)
WHEN = datetime(2026, 11, 20, 21, 30, tzinfo=UTC)


def journal(db: Database, key: bytes | None = None, local: Backend | None = None) -> Journal:
    guard = build_guard(Metrics(), AuditLog(AuditRepository(db), os.urandom(32)))  # the guard create_app wires
    vault = UserKeyVault(db, key or os.urandom(32))
    return Journal(JournalRepository(db), vault, lambda: local, guard=guard, insight_timeout=20)


def windows(text_: str, size: int = 8) -> list[str]:
    words = text_.split()
    return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]


async def raw_rows(db: Database, table: str) -> list[bytes]:
    """Every column of every row, as the bytes an attacker with the database would see."""
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()
    out = []
    for row in rows:
        for value in row:
            out.append(bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode())
    return out


def assert_no_clear_text(blobs: list[bytes], clear: str) -> None:
    for blob in blobs:
        lowered = blob.lower()
        for window in windows(clear):
            assert window.lower().encode() not in lowered, window


@on_session_loop
async def test_rows_hold_no_transcript_text(migrated_db: Database, database_url: str) -> None:
    key = os.urandom(32)
    diary = journal(migrated_db, key)
    entry = await diary.add("alice", TRANSCRIPT, WHEN, mood=2)
    assert entry.insight_status == "pending"  # no local model here
    requests = RequestRepository(migrated_db)
    await requests.add(RequestRecord(id="req_1", endpoint="hybrid", privacy_level="private", decision="local",
                                     processing_mode="local", backend="local:m", outcome="ok", latency_ms=5,
                                     user_id="alice"))  # fmt: skip
    comment = "The answer about my manager and the launch deadline was kind and really useful to me today"
    await Ratings(FeedbackRepository(migrated_db), requests, UserKeyVault(migrated_db, key)).rate(
        "alice", "req_1", 5, comment
    )

    journal_rows = await raw_rows(migrated_db, "journal_entries")
    assert journal_rows and any(b"alice" in blob for blob in journal_rows)  # the clear columns are there
    assert_no_clear_text(journal_rows, TRANSCRIPT)
    assert_no_clear_text(await raw_rows(migrated_db, "answer_feedback"), comment)
    for word in (b"anxious", b"Priya", b"deadline"):
        assert not any(word in blob for blob in journal_rows)
    if make_url(database_url).get_backend_name() == "sqlite":
        # The whole file, free pages and journal included, holds no clear text either.
        path = Path(make_url(database_url).database or "")
        files = [p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
        assert_no_clear_text(files, TRANSCRIPT)

    # The owner reads it back intact; another user cannot see it.
    entries, _ = await diary.page("alice", limit=10, offset=0)
    assert [e.transcript for e in entries] == [TRANSCRIPT] and entries[0].mood == 2
    assert (await diary.page("bob", limit=10, offset=0))[0] == []
    with pytest.raises(NotFound):
        await diary.delete("bob", entry.id)


@on_session_loop
async def test_a_wrong_master_key_cannot_decrypt(migrated_db: Database) -> None:
    right, wrong = os.urandom(32), os.urandom(32)
    await journal(migrated_db, right).add("alice", TRANSCRIPT, WHEN, None)
    with pytest.raises(DataKeyUnavailable):
        await journal(migrated_db, wrong).page("alice", limit=10, offset=0)
    # Below the fingerprint check too: the wrapped key does not open under another master key.
    async with migrated_db.engine.connect() as conn:
        wrapped = bytes((await conn.execute(text("SELECT wrapped_key FROM user_data_keys"))).scalar_one())
    with pytest.raises(InvalidTag):
        AESGCM(wrong).decrypt(wrapped[:12], wrapped[12:], b"upcoach-data-key\x00alice")
    assert len(AESGCM(right).decrypt(wrapped[:12], wrapped[12:], b"upcoach-data-key\x00alice")) == 32


@on_session_loop
async def test_erasure_makes_entries_unrecoverable_even_from_the_raw_rows(migrated_db: Database) -> None:
    key = os.urandom(32)
    diary = journal(migrated_db, key)
    entry = await diary.add("alice", TRANSCRIPT, WHEN, 3)
    await diary.add("bob", "Bob's own entry stays readable after Alice leaves.", WHEN, 4)
    async with migrated_db.engine.connect() as conn:
        query = text("SELECT payload FROM journal_entries WHERE id = :id")
        payload = bytes((await conn.execute(query, {"id": entry.id})).scalar_one())
    vault = UserKeyVault(migrated_db, key)
    assert (await vault.cipher("alice")).decrypt(payload, f"journal:{entry.id}")  # readable before

    assert await diary.erase("alice") == 1
    assert await raw_rows(migrated_db, "journal_entries") != []  # bob's row
    with pytest.raises(DataKeyMissing):
        await vault.cipher("alice")
    # A backup copy of the row, with the master key at hand, still cannot be read: the data key is gone, and a
    # new key for the same user is a different key.
    fresh = await vault.cipher("alice", create=True)
    with pytest.raises(InvalidTag):
        fresh.decrypt(payload, f"journal:{entry.id}")
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(payload[1:13], payload[13:], None)
    assert [e.transcript for e in (await diary.page("bob", limit=5, offset=0))[0]] == [
        "Bob's own entry stays readable after Alice leaves."
    ]


@on_session_loop
async def test_pending_insight_is_completed_when_the_local_model_is_back(migrated_db: Database) -> None:
    key = os.urandom(32)
    with FaultServer() as server:
        backend = OpenAICompatBackend(name="local-stand-in", base_url=server.url, model="ok", kind="pool")
        try:
            loading = journal(migrated_db, key, local=None)
            entry = await loading.add("alice", TRANSCRIPT, WHEN, 2)
            assert entry.insight_status == "pending" and entry.insight is None
            summary = await loading.insights("alice", WHEN - timedelta(days=1), WHEN + timedelta(days=1))
            assert summary["pendingInsights"] == 1 and summary["insights"] == []

            loaded = journal(migrated_db, key, local=backend)
            summary = await loaded.insights("alice", WHEN - timedelta(days=1), WHEN + timedelta(days=1))
            assert summary["pendingInsights"] == 0
            assert summary["insights"] == [
                {"entryId": entry.id, "recordedAt": WHEN.isoformat(), "insight": summary["insights"][0]["insight"]}
            ]
            assert summary["insights"][0]["insight"]
            stored, _ = await loaded.page("alice", limit=1, offset=0)
            assert stored[0].insight_status == "ready"
        finally:
            await backend.aclose()


@on_session_loop
async def test_insights_trend_and_recurring_themes(migrated_db: Database) -> None:
    diary = journal(migrated_db)
    days = [
        ("I felt anxious about the deadline at work and slept badly.", 2, 0),
        ("Work was stressful again, my manager added another project.", 2, 1),
        ("A great walk with a friend, I feel calm and grateful today!", 5, 8),
        ("Hoy estuve muy cansada y preocupada por el trabajo y la familia.", None, 9),
    ]
    for transcript, mood, offset in days:
        await diary.add("alice", transcript, WHEN + timedelta(days=offset), mood)
    summary = await diary.insights("alice", WHEN - timedelta(days=1), WHEN + timedelta(days=30))
    assert summary["entries"] == 4 and summary["languages"] == {"en": 3, "unsupported": 1}
    daily = summary["moodTrend"]["daily"]  # type: ignore[index]
    assert [d["date"] for d in daily] == ["2026-11-20", "2026-11-21", "2026-11-28", "2026-11-29"]
    assert daily[0]["mood"] == 2.0 and daily[0]["sentiment"] < 0 and daily[2]["sentiment"] > 0
    assert daily[3]["sentiment"] is None  # Spanish: not scored rather than guessed
    weekly = summary["moodTrend"]["weekly"]  # type: ignore[index]
    assert weekly[0] == {"week": "2026-W47", "entries": 2, "sentiment": weekly[0]["sentiment"], "mood": 2.0}
    assert {"theme": "work", "count": 2} in summary["themes"]  # type: ignore[operator]
    # The window is honoured.
    narrow = await diary.insights("alice", WHEN + timedelta(days=8), WHEN + timedelta(days=9))
    assert narrow["entries"] == 1


def test_sentiment_is_sensible_in_english_and_refuses_other_languages() -> None:
    assert analyse("I had a wonderful day, I am proud and happy with my progress!").label == "positive"
    assert analyse("I feel awful, exhausted and hopeless about this job.").label == "negative"
    assert analyse("I went to the office and had two meetings.").label == "neutral"
    assert analyse("It was not a good day.").label == "negative"  # VADER handles negation
    for other in ("Ich bin heute sehr glücklich und zufrieden mit meiner Arbeit.",
                  "Hoy me siento muy feliz con mi progreso.", "今日はとても幸せです。"):  # fmt: skip
        result = analyse(other)
        assert result.language == "unsupported" and result.compound is None and result.label is None
    assert detect_language("Great!") == "en"


def test_themes_come_from_the_lexicon() -> None:
    assert themes_of(TRANSCRIPT) == ["work", "sleep", "stress", "exercise"]
    assert themes_of("Stressed and sleepless, but grateful for my sister.") == [
        "sleep",
        "stress",
        "family",
        "gratitude",
    ]
    assert themes_of("Nothing to report.") == []


def test_master_key_from_environment_or_generated_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert master_key_from_settings(Settings(data_dir=tmp_path, journal_master_key=key.hex())) == key
    generated = master_key_from_settings(Settings(data_dir=tmp_path / "fresh"))
    assert len(generated) == 32 and (tmp_path / "fresh" / "journal.key").stat().st_mode & 0o777 == 0o600
    assert master_key_from_settings(Settings(data_dir=tmp_path / "fresh")) == generated
    with pytest.raises(ValueError):
        parse_master_key("00" * 16)  # AES-256 needs 32 bytes
