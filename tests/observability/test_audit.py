"""The HMAC-chained audit trail on SQLite and PostgreSQL: chaining, tamper detection, concurrency, CLI, HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from tests.storage import conftest as storage_fixtures
from upcoach.api import errors as api_errors
from upcoach.api.audit_routes import router as audit_router
from upcoach.cli import app as cli_app
from upcoach.config import Settings
from upcoach.observability.audit import (
    AuditLog,
    VerifyResult,
    audit_key_from_settings,
    parse_audit_key,
)
from upcoach.security.auth import Authenticator
from upcoach.security.keyfiles import create_key_file
from upcoach.security.keys import ApiKeys, Role
from upcoach.security.refusals import RefusalLog
from upcoach.storage.audit import GENESIS_HMAC, AuditEvent, AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.tables import AuditEventRow

postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db

on_session_loop = pytest.mark.asyncio(loop_scope="session")

KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
T0 = datetime(2025, 6, 1, 9, 30, 15, 123456, tzinfo=UTC)


class StepClock:
    """Deterministic timestamps: T0, T0 + 1 min, T0 + 2 min, ..."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return T0 + timedelta(minutes=self.calls - 1)


def expected_hmac(key: bytes, event: AuditEvent) -> str:
    """The documented formula, written out independently of the implementation."""
    body = [
        event.id,
        event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"),
        event.actor,
        event.actor_role,
        event.action,
        event.target,
        event.details,
        event.prev_hmac,
    ]
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


async def fill(audit: AuditLog, count: int = 5) -> list[AuditEvent]:
    return [
        await audit.append(f"user-{i}", "admin", "settings.changed", target=f"setting-{i}", details={"n": i})
        for i in range(1, count + 1)
    ]


async def execute(db: Database, *statements: tuple[str, dict[str, object]]) -> None:
    async with db.engine.begin() as conn:
        for statement, params in statements:
            await conn.execute(text(statement), params)


# --- the chain ----------------------------------------------------------------------------------------------------


@on_session_loop
async def test_events_are_chained_with_the_documented_hmac(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY, clock=StepClock())
    first = await audit.append("system", "system", "key.created", target="k1", details={"role": "coach", "b": [1, 2]})
    second = await audit.append("alice", "admin", "model.changed", details={"from": "a", "to": "b"})
    third = await audit.append("bob", "auditor", "audit.read")

    assert [e.id for e in (first, second, third)] == [1, 2, 3]
    assert first.prev_hmac == GENESIS_HMAC == "0" * 64
    assert second.prev_hmac == first.hmac and third.prev_hmac == second.hmac
    assert third.details == {} and third.target is None
    for event in (first, second, third):
        assert event.hmac == expected_hmac(KEY, event)

    stored = await audit.query()
    assert stored == [first, second, third]
    assert stored[0].created_at == T0
    assert await audit.verify() == VerifyResult(True, 3, None, "3 rows intact", third.hmac)


@on_session_loop
async def test_empty_trail_verifies(migrated_db: Database) -> None:
    assert await AuditLog(AuditRepository(migrated_db), KEY).verify() == VerifyResult(True, 0, None, "0 rows intact")


@on_session_loop
async def test_editing_a_rows_details_is_caught_with_its_id(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    await fill(audit)
    json_param = "CAST(:details AS JSON)" if migrated_db.dialect == "postgresql" else ":details"
    await execute(
        migrated_db, (f"UPDATE audit_events SET details = {json_param} WHERE id = 3", {"details": '{"n": 99}'})
    )

    result = await audit.verify()
    assert (result.ok, result.first_bad_id, result.rows) == (False, 3, 2)
    assert result.reason == "row 3 fails its HMAC (row edited, or a different audit key)"
    assert result.head_hmac == (await audit.query(limit=2))[1].hmac


@on_session_loop
async def test_editing_other_columns_is_caught(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    events = await fill(audit)
    await execute(migrated_db, ("UPDATE audit_events SET actor = 'mallory' WHERE id = 5", {}))
    assert (await audit.verify()).first_bad_id == 5

    await execute(migrated_db, ("UPDATE audit_events SET actor = 'user-5' WHERE id = 5", {}))
    assert (await audit.verify()).ok
    async with migrated_db.engine.begin() as conn:
        later = events[1].created_at + timedelta(seconds=1)
        await conn.execute(update(AuditEventRow).where(AuditEventRow.id == 2).values(created_at=later))
    assert (await audit.verify()).first_bad_id == 2


@on_session_loop
async def test_deleting_a_middle_row_is_caught(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    await fill(audit)
    await execute(migrated_db, ("DELETE FROM audit_events WHERE id = 3", {}))

    result = await audit.verify()
    assert (result.ok, result.first_bad_id, result.rows) == (False, 3, 2)
    assert result.reason == "row 3 is missing: row 4 follows row 2 (rows deleted)"


@on_session_loop
async def test_deleting_and_renumbering_is_caught(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    await fill(audit)
    # A careful attacker closes the gap: ids are continuous again, but row 3 no longer links to row 2.
    await execute(
        migrated_db,
        ("DELETE FROM audit_events WHERE id = 3", {}),
        ("UPDATE audit_events SET id = 3 WHERE id = 4", {}),
        ("UPDATE audit_events SET id = 4 WHERE id = 5", {}),
    )
    result = await audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 3)
    assert "does not link to row 2" in result.reason


@on_session_loop
async def test_swapping_two_rows_ids_is_caught(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    await fill(audit)
    await execute(
        migrated_db,
        ("UPDATE audit_events SET id = -2 WHERE id = 2", {}),
        ("UPDATE audit_events SET id = 2 WHERE id = 4", {}),
        ("UPDATE audit_events SET id = 4 WHERE id = -2", {}),
    )
    result = await audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 2)
    assert result.reason == "row 2 does not link to row 1 (rows deleted, inserted or reordered)"


@on_session_loop
async def test_deleting_the_first_row_and_a_wrong_key_are_caught(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    await fill(audit, 2)
    other_key = AuditLog(AuditRepository(migrated_db), bytes(32))
    assert (await other_key.verify()).first_bad_id == 1

    await execute(migrated_db, ("DELETE FROM audit_events WHERE id = 1", {}))
    result = await audit.verify()
    assert (result.first_bad_id, result.reason) == (1, "row 1 is missing: row 2 follows the start (rows deleted)")


@on_session_loop
async def test_the_database_refuses_a_fork(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    first, second = await fill(audit, 2)
    # A second successor of row 1, as a writer that skipped the lock would insert it.
    with pytest.raises(IntegrityError):
        await execute(
            migrated_db,
            (
                "INSERT INTO audit_events (id, created_at, actor, actor_role, action, target, details, prev_hmac, hmac)"
                " VALUES (3, :t, 'x', 'admin', 'data.erased', NULL, '{}', :prev, :mac)",
                {"t": T0, "prev": first.hmac, "mac": "f" * 64},
            ),
        )
    assert [e.id for e in await audit.query()] == [1, 2]


@on_session_loop
async def test_fifty_concurrent_appends_keep_one_chain(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    events = await asyncio.gather(
        *(audit.append(f"u{i}", "user", "data.exported", details={"i": i}) for i in range(50))
    )
    assert sorted(e.id for e in events) == list(range(1, 51))
    result = await audit.verify()
    assert (result.ok, result.rows) == (True, 50)
    stored = await audit.query(limit=100)
    assert {e.details["i"] for e in stored} == set(range(50))


@on_session_loop
async def test_concurrent_appends_from_separate_engines_keep_one_chain(
    database_url: str, migrated_db: Database
) -> None:
    """Three engines with their own connection pools and locks stand in for three server processes."""
    others = [Database(database_url) for _ in range(2)]
    try:
        logs = [AuditLog(AuditRepository(d), KEY) for d in (migrated_db, *others)]
        await asyncio.gather(*(logs[i % 3].append(f"w{i % 3}", "system", "request.blocked") for i in range(51)))
    finally:
        for other in others:
            await other.dispose()
    result = await AuditLog(AuditRepository(migrated_db), KEY).verify()
    assert (result.ok, result.rows) == (True, 51)
    actors = [e.actor for e in await AuditLog(AuditRepository(migrated_db), KEY).query(limit=100)]
    assert sorted(actors) == sorted(["w0"] * 17 + ["w1"] * 17 + ["w2"] * 17)


@on_session_loop
async def test_query_filters_and_paging(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY, clock=StepClock())
    await audit.append("alice", "admin", "key.created", target="k1")
    await audit.append("bob", "auditor", "audit.read")
    await audit.append("alice", "admin", "key.revoked", target="k1")
    await audit.append("alice", "admin", "audit.read")

    assert [e.id for e in await audit.query(actor="alice")] == [1, 3, 4]
    assert [e.id for e in await audit.query(action="audit.read")] == [2, 4]
    assert [e.id for e in await audit.query(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=2))] == [2, 3]
    assert [e.id for e in await audit.query(after_id=1, limit=2)] == [2, 3]
    assert [e.id for e in await audit.query(actor="alice", before_id=4)] == [1, 3]
    with pytest.raises(ValueError, match="timezone-aware"):
        await audit.query(since=datetime(2025, 1, 1))


@on_session_loop
async def test_details_must_be_plain_json_without_text_or_secrets(migrated_db: Database) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    for details in ({"message": "I feel"}, {"outer": [{"Prompt": "x"}]}, {"api_key": "uc_..."}):
        with pytest.raises(ValueError, match="must not hold message text or secrets"):
            await audit.append("u", "user", "request.blocked", details=details)
    with pytest.raises(ValueError, match="plain JSON"):
        await audit.append("u", "user", "request.blocked", details={"when": datetime.now(UTC)})
    with pytest.raises(ValueError, match="area.verb"):
        await audit.append("u", "user", "Blocked!")

    event = await audit.append("u", "user", "request.blocked", details={"signals": ("a", "b"), "score": 0.75})
    assert event.details == {"signals": ["a", "b"], "score": 0.75}
    assert (await audit.verify()).ok
    assert [e.action for e in await audit.query()] == ["request.blocked"]


# --- the key --------------------------------------------------------------------------------------------------------


def test_keys_parse_from_hex_and_base64() -> None:
    raw = bytes(range(100, 132))
    assert parse_audit_key(raw.hex()) == raw
    assert parse_audit_key(raw.hex().upper() + "\n") == raw
    assert parse_audit_key(base64.b64encode(raw).decode()) == raw
    assert parse_audit_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    with pytest.raises(ValueError, match="at least 16"):
        parse_audit_key("00" * 8)
    with pytest.raises(ValueError, match="neither hex nor base64"):
        parse_audit_key("not a key!")


def test_key_file_is_generated_once_with_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPCOACH_AUDIT_KEY", raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    assert audit_key_from_settings(settings, create=False) is None
    key = audit_key_from_settings(settings)
    assert key is not None and len(key) == 32
    path = tmp_path / "data" / "audit.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert audit_key_from_settings(settings) == key
    assert os.listdir(tmp_path / "data") == ["audit.key"]  # no temporary file left behind

    configured = Settings(data_dir=tmp_path / "data", audit_key=KEY.hex())  # type: ignore[arg-type]
    assert audit_key_from_settings(configured) == KEY


def test_racing_key_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        create_key_file(path)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parse_audit_key(path.read_text())) == 32
    assert sorted(os.listdir(tmp_path)) == ["audit.key"]


# --- the CLI --------------------------------------------------------------------------------------------------------


def test_cli_verify_and_export(db: Database, database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "data"
    env = {"UPCOACH_DATA_DIR": str(data), "UPCOACH_DATABASE_URL": database_url, "UPCOACH_AUDIT_KEY": None}

    empty = runner.invoke(cli_app, ["audit", "verify"], env=env)
    assert empty.exit_code == 0, empty.output
    assert "0 rows intact" in empty.output

    for user in ("ann", "ben", "cid", "dee"):
        assert runner.invoke(cli_app, ["keys", "create", "--user", user], env=env).exit_code == 0

    intact = runner.invoke(cli_app, ["audit", "verify"], env=env)
    assert intact.exit_code == 0, intact.output
    assert intact.output.startswith("audit trail intact: 4 rows intact; head ")

    exported = runner.invoke(cli_app, ["audit", "export", "--format", "jsonl"], env=env)
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(e["id"], e["action"], e["details"]["user_id"]) for e in lines] == [
        (1, "key.created", "ann"),
        (2, "key.created", "ben"),
        (3, "key.created", "cid"),
        (4, "key.created", "dee"),
    ]
    assert lines[1]["prev_hmac"] == lines[0]["hmac"]
    assert datetime.fromisoformat(lines[0]["created_at"]).tzinfo is not None
    filtered = runner.invoke(cli_app, ["audit", "export", "--format", "jsonl", "--actor", "nobody"], env=env)
    assert filtered.exit_code == 0 and filtered.stdout == ""

    async def tamper() -> None:
        database = Database(database_url)
        try:
            await execute(database, ("UPDATE audit_events SET target = 'forged' WHERE id = 3", {}))
        finally:
            await database.dispose()

    asyncio.run(tamper())
    broken = runner.invoke(cli_app, ["audit", "verify"], env=env)
    assert broken.exit_code == 1
    assert "audit trail broken at row 3" in broken.output

    (data / "audit.key").unlink()
    keyless = runner.invoke(cli_app, ["audit", "verify"], env=env)
    assert keyless.exit_code == 2
    assert "no audit key" in keyless.output


# --- GET /api/audit ---------------------------------------------------------------------------------------------------


@pytest.fixture
async def audit_api(
    migrated_db: Database, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, ApiKeys, AuditLog, RefusalLog]]:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    keys = ApiKeys(ApiKeyRepository(migrated_db), audit)
    settings = Settings(data_dir=tmp_path)
    app = FastAPI()
    api_errors.install(app)
    app.include_router(audit_router)
    refusals = RefusalLog(audit)
    app.state.authenticator = Authenticator(settings, keys, on_failure=refusals.record)
    app.state.audit_log = audit
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client, keys, audit, refusals


@on_session_loop
async def test_api_serves_auditors_and_audits_each_read(
    audit_api: tuple[httpx.AsyncClient, ApiKeys, AuditLog, RefusalLog],
) -> None:
    client, keys, audit, refusals = audit_api
    auditor = await keys.create("aud", Role.auditor)  # event 1
    user = await keys.create("usr", Role.user)  # event 2
    headers = {"Authorization": f"Bearer {auditor.token}"}

    page = await client.get("/api/audit", params={"limit": 1}, headers=headers)  # event 3 is this read
    assert page.status_code == 200
    body = page.json()
    assert [e["id"] for e in body["data"]] == [1]
    assert (body["has_more"], body["last_id"]) == (True, 1)
    assert body["data"][0]["target"] == auditor.key.id

    rest = (await client.get("/api/audit", params={"after_id": 1}, headers=headers)).json()  # event 4
    # A read answers with the trail as it was when the read began, so it never includes itself.
    assert [e["id"] for e in rest["data"]] == [2, 3]
    assert (rest["has_more"], rest["last_id"]) == (False, 3)

    reads = await audit.query(action="audit.read")
    assert [(e.id, e.actor, e.actor_role, e.details) for e in reads] == [
        (3, "aud", "auditor", {"format": "json", "filters": {"limit": 1}}),
        (4, "aud", "auditor", {"format": "json", "filters": {"after_id": 1}}),
    ]

    since = "2000-01-01T00:00:00"
    stream = await client.get(
        "/api/audit", params={"format": "jsonl", "action": "key.created", "since": since}, headers=headers
    )  # event 5
    assert stream.status_code == 200
    assert stream.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in stream.text.splitlines()]
    assert [(e["id"], e["details"]["user_id"]) for e in lines] == [(1, "aud"), (2, "usr")]
    last = (await audit.query(after_id=4))[0]
    assert last.details == {
        "format": "jsonl",
        "filters": {"action": "key.created", "since": "2000-01-01T00:00:00+00:00"},
    }

    denied = await client.get("/api/audit", headers={"X-API-Key": user.token})  # counted for event 6
    assert denied.status_code == 403
    assert (await client.get("/api/audit")).status_code == 401
    too_many = await client.get("/api/audit", params={"limit": 5000}, headers=headers)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"

    # Neither the request without credentials nor the refused limit got as far as an audit.read; the refused role
    # is written with the other refusals of its client address and minute.
    assert await audit.query(after_id=5) == []
    await refusals.flush(everything=True)
    events = await audit.query(after_id=5)
    assert [(e.action, e.details["reasons"], e.details["user_ids"]) for e in events] == [
        ("auth.refused", {"role": 1}, ["usr"])
    ]
    assert (await audit.verify()).ok
