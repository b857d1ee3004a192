"""The model registry and job table on SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from upcoach.errors import InvalidRequest, JobNotFound, ModelExists, ModelInUse, ModelNotFound, ModelNotReady
from upcoach.modelstore.registry import JobRepository, ModelRegistry, model_id
from upcoach.storage.database import Database

on_session_loop = pytest.mark.asyncio(loop_scope="session")


async def _ready(registry: ModelRegistry, name: str, version: str) -> str:
    added = await registry.add(
        name=name, version=version, source=f"https://example.test/{name}.gguf", sha256="ab" * 32,
        path=f"/store/{name}@{version}.ucm", quantization="Q4_K_M", device_tier="server",
    )  # fmt: skip
    assert added.status == "downloading" and not added.active
    await registry.set_status(added.id, "verifying", size=1234)
    return (await registry.set_status(added.id, "ready")).id


@on_session_loop
async def test_lifecycle_activate_rollback_delete(migrated_db: Database) -> None:
    registry = ModelRegistry(migrated_db)
    assert await registry.list() == [] and await registry.active() is None
    one = await _ready(registry, "qwen", "1")
    two = await _ready(registry, "qwen", "2")
    assert one == "qwen@1"
    assert (await registry.get(two)).size == 1234

    await registry.activate(one)
    assert (await registry.active()).id == one  # type: ignore[union-attr]
    assert await registry.previous_active() is None
    await registry.activate(two)
    assert [(v.id, v.active, v.previous) for v in await registry.list()] == [(one, False, True), (two, True, False)]
    assert (await registry.previous_active()).id == one  # type: ignore[union-attr]

    # A rollback is activating the previous one: the two swap places.
    await registry.activate(one)
    assert (await registry.active()).id == one  # type: ignore[union-attr]
    assert (await registry.previous_active()).id == two  # type: ignore[union-attr]

    with pytest.raises(ModelInUse) as refused:
        await registry.delete(one)
    assert refused.value.status == 409 and refused.value.code == "model_in_use"
    assert (await registry.delete(two)).id == two
    assert await registry.previous_active() is None
    with pytest.raises(ModelNotFound):
        await registry.get(two)


@on_session_loop
async def test_resolve_prefers_the_active_then_the_newest_ready(migrated_db: Database) -> None:
    registry = ModelRegistry(migrated_db)
    await _ready(registry, "gemma", "1")
    await _ready(registry, "gemma", "2")
    await registry.add(name="gemma", version="3", source="x", sha256="cd" * 32, path="/p")  # still downloading
    assert (await registry.resolve("gemma")).id == "gemma@2"
    await registry.activate("gemma@1")
    assert (await registry.resolve("gemma")).id == "gemma@1"
    assert (await registry.resolve("gemma@3")).status == "downloading"
    for unknown in ("nope", "gemma@9"):
        with pytest.raises(ModelNotFound) as missing:
            await registry.resolve(unknown)
        assert missing.value.status == 404


@on_session_loop
async def test_only_ready_versions_activate_and_ready_ones_are_not_overwritten(migrated_db: Database) -> None:
    registry = ModelRegistry(migrated_db)
    await registry.add(name="m", version="1", source="x", sha256="ab" * 32, path="/p")
    with pytest.raises(ModelNotReady):
        await registry.activate("m@1")
    await registry.set_status("m@1", "failed", "boom")
    assert (await registry.get("m@1")).error == "boom"
    # A failed row is replaced by a retry; a ready one is kept.
    retried = await registry.add(name="m", version="1", source="y", sha256="cd" * 32, path="/p")
    assert (retried.status, retried.source, retried.error) == ("downloading", "y", None)
    await registry.set_status("m@1", "ready")
    with pytest.raises(ModelExists):
        await registry.add(name="m", version="1", source="z", sha256="ef" * 32, path="/p")
    with pytest.raises(ModelNotFound):
        await registry.activate("m@2")


@on_session_loop
async def test_concurrent_activations_leave_exactly_one_active(migrated_db: Database) -> None:
    registry = ModelRegistry(migrated_db)
    ids = [await _ready(registry, "c", str(i)) for i in range(4)]
    results = await asyncio.gather(*(registry.activate(id) for id in ids), return_exceptions=True)
    assert any(not isinstance(result, BaseException) for result in results)
    for result in results:
        assert not isinstance(result, BaseException) or isinstance(result, ModelNotReady)
    assert sum(v.active for v in await registry.list()) == 1


def test_ids_are_checked_because_they_name_files() -> None:
    assert model_id("qwen2.5-0.5b-instruct", "0.9.0") == "qwen2.5-0.5b-instruct@0.9.0"
    for name, version in (("../etc", "1"), ("a/b", "1"), ("ok", "1/2"), ("", "1"), ("ok", ""), ("x" * 200, "1")):
        with pytest.raises(InvalidRequest):
            model_id(name, version)


@on_session_loop
async def test_jobs(migrated_db: Database) -> None:
    jobs = JobRepository(migrated_db)
    job = await jobs.create("https://example.test/m.gguf", status="running")
    done = await jobs.create("catalog:qwen")
    updated = await jobs.update(job.id, bytes_done=10, bytes_total=100, model_id="m@1")
    assert (updated.bytes_done, updated.bytes_total, updated.model_id, updated.status) == (10, 100, "m@1", "running")
    assert updated.updated_at >= job.updated_at
    await jobs.update(done.id, status="done")
    assert await jobs.fail_unfinished() == 1
    assert (await jobs.get(job.id)).status == "failed"
    assert (await jobs.get(done.id)).status == "done"
    assert {j.id for j in await jobs.list()} == {job.id, done.id}
    with pytest.raises(JobNotFound):
        await jobs.get("missing")
    with pytest.raises(ValueError, match="cannot be updated"):
        await jobs.update(job.id, created_at=None)
