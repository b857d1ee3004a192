"""Export, erasure and retention on SQLite and PostgreSQL, with the service's own data kinds registered as the
server registers them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from upcoach.app import _register_core_rights
from upcoach.config import Settings
from upcoach.errors import Unavailable
from upcoach.observability.audit import AuditLog
from upcoach.observability.metrics import Metrics
from upcoach.observability.records import RecordWriter
from upcoach.observability.spool import Spool
from upcoach.privacy.retention import RetentionJob
from upcoach.privacy.rights import SELF_ACTOR, DataRights
from upcoach.privacy.settings import PrivacyService
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.fences import Fences
from upcoach.storage.requests import RequestRecord, RequestRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = bytes(range(32))
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def record(request_id: str, user_id: str | None, days_old: float, **fields: object) -> RequestRecord:
    values: dict[str, object] = {"endpoint": "hybrid", "privacy_level": "private", "decision": "local",
                                 "processing_mode": "local", "backend": "llamacpp", "outcome": "ok",
                                 "latency_ms": 10.0, **fields}  # fmt: skip
    return RequestRecord(id=request_id, user_id=user_id, created_at=NOW - timedelta(days=days_old), **values)  # type: ignore[arg-type]


async def setup(db: Database, tmp_path: Path) -> tuple[DataRights, PrivacyService, RequestRepository, AuditLog]:
    audit = AuditLog(AuditRepository(db), KEY)
    privacy = PrivacyService(db, audit, Settings(data_dir=tmp_path, default_retention_days=30))
    requests = RequestRepository(db)
    rights = DataRights(audit, KEY, fences=Fences(db))
    _register_core_rights(rights, privacy, requests, RecordWriter(requests, Spool(tmp_path / "spool"), Metrics()))
    await requests.add_many([
        record("a1", "alice", 1, redactions={"EMAIL": 2}, processing_mode="hybrid"),
        record("a2", "alice", 2),
        record("b1", "bob", 1),
        record("b2", "bob-alice", 1),  # a user id that contains the other one
        record("n1", None, 1),
    ])  # fmt: skip
    await privacy.update("alice", {"processing_mode": "local_only"}, actor="alice", actor_role="user")
    await privacy.update("bob", {"region": "us"}, actor="bob", actor_role="user")
    await audit.append("alice", "user", "request.flagged", target="a1", details={"flags": ["self_harm"]})
    await audit.append("root", "admin", "key.created", target="k1", details={"user_id": "alice", "role": "user"})
    await audit.append("bob", "user", "request.flagged", target="b1", details={"flags": ["x"]})
    return rights, privacy, requests, audit


async def test_export_holds_exactly_the_callers_data(migrated_db: Database, tmp_path: Path) -> None:
    rights, _, _, audit = await setup(migrated_db, tmp_path)
    document = await rights.export("alice", actor="alice", actor_role="user")
    json.dumps(document)  # machine-readable as it stands
    data = document["data"]
    assert document["userId"] == "alice" and set(data) == {"settings", "requestRecords", "auditEvents"}  # type: ignore[arg-type]
    assert [r["id"] for r in data["requestRecords"]] == ["a2", "a1"]  # type: ignore[index]
    assert data["requestRecords"][1]["redactions"] == {"EMAIL": 2}  # type: ignore[index]
    assert data["settings"]["current"]["processing_mode"] == "local_only"  # type: ignore[index]
    assert [h["version"] for h in data["settings"]["history"]] == [1]  # type: ignore[index]
    audit_rows = data["auditEvents"]  # type: ignore[index]
    assert [(e["action"], e["actor"]) for e in audit_rows] == [
        ("privacy.settings.update", "alice"), ("request.flagged", "alice"), ("key.created", "root"),
    ]  # fmt: skip
    assert "bob" not in json.dumps(data)
    exported = await audit.query(action="privacy.export")
    assert [(e.actor, e.target) for e in exported] == [("alice", "alice")]


async def test_erasure_removes_the_users_rows_and_leaves_an_audit_row_without_the_id(
    migrated_db: Database, tmp_path: Path
) -> None:
    rights, privacy, requests, audit = await setup(migrated_db, tmp_path)
    counts = await rights.erase("alice", "alice", "user")
    assert counts == {"settings": 1, "requestRecords": 2}
    assert await requests.all_for_user("alice") == []
    assert await privacy.history("alice") == [] and (await privacy.get("alice")).version == 0
    assert [r.id for r in await requests.list(limit=10)] == ["n1", "b2", "b1"]
    assert (await privacy.get("bob")).region == "us"

    (erasure,) = await audit.query(action="privacy.erasure")
    assert erasure.actor == SELF_ACTOR and erasure.target is None
    assert erasure.details == {"counts": counts, "subject": rights.pseudonym("alice")}
    assert "alice" not in json.dumps(erasure.to_json())
    assert rights.pseudonym("alice") != rights.pseudonym("bob") and len(rights.pseudonym("alice")) == 64
    assert (await audit.verify()).ok  # the chain is intact: nothing was deleted from it

    # The export after erasure: nothing left but the audit rows, which are kept.
    after = (await rights.export("alice"))["data"]
    assert after["requestRecords"] == [] and after["settings"]["history"] == []  # type: ignore[index]


async def test_an_eraser_that_fails_is_reported_after_the_others_ran(migrated_db: Database, tmp_path: Path) -> None:
    rights, _, requests, audit = await setup(migrated_db, tmp_path)

    async def broken(user_id: str) -> int:
        raise OSError("disk on fire")

    async def nothing(user_id: str) -> list[object]:
        return []

    rights.register("journal", nothing, broken)
    with pytest.raises(Unavailable, match="journal"):
        await rights.erase("bob", "root", "admin")
    assert await requests.all_for_user("bob") == []
    (erasure,) = await audit.query(action="privacy.erasure")
    assert erasure.actor == "root" and erasure.details["failed"] == ["journal"]


async def test_retention_deletes_only_expired_rows(migrated_db: Database, tmp_path: Path) -> None:
    audit = AuditLog(AuditRepository(migrated_db), KEY)
    privacy = PrivacyService(migrated_db, audit, Settings(data_dir=tmp_path))
    requests = RequestRepository(migrated_db)
    await requests.add_many([
        record("short-old", "shorty", 8), record("short-new", "shorty", 6),
        record("long-old", "keeper", 100), record("long-new", "keeper", 80),
        record("default-old", "nobody", 31), record("default-new", "nobody", 29),
        record("anon-old", None, 31), record("anon-new", None, 29),
    ])  # fmt: skip
    await privacy.update("shorty", {"retention_days": 7}, actor="shorty", actor_role="user")
    await privacy.update("keeper", {"retention_days": 90}, actor="keeper", actor_role="user")
    job = RetentionJob(privacy.repository, 30, 3600, clock=lambda: NOW)
    assert await job.run_once() == 4
    left = sorted(r.id for r in await requests.list(limit=100))
    assert left == ["anon-new", "default-new", "long-new", "short-new"]
    assert await job.run_once() == 0


async def test_retention_deletes_in_batches(migrated_db: Database, tmp_path: Path) -> None:
    requests = RequestRepository(migrated_db)
    await requests.add_many([record(f"old-{i}", f"u{i % 3}", 400) for i in range(25)] + [record("new", "u1", 1)])
    privacy = PrivacyService(migrated_db, None, Settings(data_dir=tmp_path))
    assert await privacy.repository.delete_expired_records(365, NOW, batch=4) == 25
    assert [r.id for r in await requests.list(limit=100)] == ["new"]
