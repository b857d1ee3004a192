"""PrivacyService on SQLite and PostgreSQL: defaults, validation, versions, optimistic concurrency, audit rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from upcoach.config import Settings
from upcoach.errors import InvalidRequest, VersionConflict
from upcoach.observability.audit import AuditLog
from upcoach.privacy.settings import PrivacyService, PrivacySettings
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = bytes(range(32))


def service(db: Database, tmp_path: Path, **overrides: object) -> tuple[PrivacyService, AuditLog]:
    audit = AuditLog(AuditRepository(db), KEY)
    settings = Settings(data_dir=tmp_path, default_retention_days=90, **overrides)  # type: ignore[arg-type]
    return PrivacyService(db, audit, settings), audit


async def test_defaults_until_saved_then_versions_and_history(migrated_db: Database, tmp_path: Path) -> None:
    privacy, _ = service(migrated_db, tmp_path)
    assert await privacy.get("alice") == PrivacySettings(retention_days=90)

    first = await privacy.update("alice", {"processing_mode": "local_only"}, actor="alice", actor_role="user")
    assert first.processing_mode == "local_only" and first.version == 1 and first.updated_at is not None
    second = await privacy.update(
        "alice", {"region": "eu", "retention_days": 30}, actor="root", actor_role="admin", expected_version=1
    )
    assert (second.version, second.region, second.retention_days) == (2, "eu", 30)
    assert second.processing_mode == "local_only"  # untouched fields are kept
    assert await privacy.get("alice") == second
    assert await privacy.get("bob") == PrivacySettings(retention_days=90)  # nobody else changed

    history = await privacy.history("alice")
    assert [(h.version, h.processing_mode, h.region, h.actor) for h in history] == [
        (1, "local_only", None, "alice"),
        (2, "local_only", "eu", "root"),
    ]
    # A change that changes nothing stores nothing.
    same = await privacy.update("alice", {"region": "eu"}, actor="alice", actor_role="user")
    assert same.version == 2 and len(await privacy.history("alice")) == 2


async def test_every_change_is_audited_with_old_and_new_values(migrated_db: Database, tmp_path: Path) -> None:
    privacy, audit = service(migrated_db, tmp_path)
    await privacy.update("carol", {"do_not_share": True, "analytics_opt_in": False}, actor="carol", actor_role="user")
    await privacy.update("carol", {"processing_mode": "cloud_allowed"}, actor="root", actor_role="admin")
    events = await audit.query(action="privacy.settings.update")
    assert [(e.actor, e.actor_role, e.target) for e in events] == [
        ("carol", "user", "carol"),
        ("root", "admin", "carol"),
    ]
    # analytics_opt_in was already false: only real changes are named.
    assert events[0].details == {"version": 1, "fields": ["do_not_share"],
                                 "changes": {"do_not_share": {"old": False, "new": True}}}  # fmt: skip
    assert events[1].details["changes"] == {"processing_mode": {"old": "hybrid", "new": "cloud_allowed"}}
    assert (await audit.verify()).ok


async def test_stale_version_is_a_conflict_and_stores_nothing(migrated_db: Database, tmp_path: Path) -> None:
    privacy, audit = service(migrated_db, tmp_path)
    await privacy.update("dave", {"retention_days": 10}, actor="dave", actor_role="user", expected_version=0)
    with pytest.raises(VersionConflict) as info:
        await privacy.update("dave", {"retention_days": 20}, actor="dave", actor_role="user", expected_version=0)
    assert info.value.status == 409 and info.value.code == "version_conflict"
    assert (await privacy.get("dave")).retention_days == 10
    assert len(await audit.query(action="privacy.settings.update")) == 1


async def test_concurrent_writers_of_the_same_version_one_wins(migrated_db: Database, tmp_path: Path) -> None:
    # Two workers (two services: two caches) both read version 0 and write version 1.
    one, _ = service(migrated_db, tmp_path)
    two, _ = service(migrated_db, tmp_path)
    results = await asyncio.gather(
        one.update("erin", {"retention_days": 11}, actor="erin", actor_role="user"),
        two.update("erin", {"retention_days": 22}, actor="erin", actor_role="user"),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, PrivacySettings)]
    assert len(wins) >= 1 and all(isinstance(r, PrivacySettings | VersionConflict) for r in results)
    history = await one.history("erin")
    assert [h.version for h in history] == list(range(1, len(history) + 1))
    assert (await one.get("erin")).retention_days == history[-1].retention_days


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"processing_mode": "cloud_only"}, "processing_mode"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 99999}, "retention_days"),
        ({"retention_days": "30"}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"do_not_share": "yes"}, "do_not_share"),
        ({"special_category_cloud_opt_in": 1}, "special_category_cloud_opt_in"),
        ({"region": "EU!"}, "region"),
        ({"region": 7}, "region"),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        ({"version": 3}, "version"),
    ],
)
async def test_bad_values_are_refused_naming_the_field(
    migrated_db: Database, tmp_path: Path, changes: dict[str, object], param: str
) -> None:
    privacy, audit = service(migrated_db, tmp_path)
    with pytest.raises(InvalidRequest) as info:
        await privacy.update("frank", changes, actor="frank", actor_role="user")
    assert info.value.param == param and info.value.status == 400
    assert await privacy.history("frank") == [] and await audit.query() == []


async def test_cache_is_invalidated_by_updates_and_expires(migrated_db: Database, tmp_path: Path) -> None:
    cached, _ = service(migrated_db, tmp_path, privacy_cache_seconds=3600)
    other_worker, _ = service(migrated_db, tmp_path)
    assert (await cached.get("gina")).processing_mode == "hybrid"
    await cached.update("gina", {"processing_mode": "local_only"}, actor="gina", actor_role="user")
    assert (await cached.get("gina")).processing_mode == "local_only"  # own update: seen at once
    await other_worker.update("gina", {"processing_mode": "cloud_allowed"}, actor="gina", actor_role="user")
    assert (await cached.get("gina")).processing_mode == "local_only"  # another worker's: after the TTL
    uncached, _ = service(migrated_db, tmp_path, privacy_cache_seconds=0)
    assert (await uncached.get("gina")).processing_mode == "cloud_allowed"


async def test_region_notice_names_regions_without_an_endpoint(migrated_db: Database, tmp_path: Path) -> None:
    privacy, _ = service(migrated_db, tmp_path, cloud_regions={"eu": {"base_url": "http://127.0.0.1:9/v1"}})
    assert privacy.available_regions == ["eu"]
    assert privacy.region_notice("eu") is None and privacy.region_notice(None) is None
    assert "locally only" in (privacy.region_notice("ap") or "")
