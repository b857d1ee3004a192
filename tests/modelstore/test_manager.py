"""ModelManager rules that need a download really in flight (our own file server holds it mid-body)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.modelstore.conftest import Behaviour, FileServer, gguf_bytes
from upcoach.config import Settings
from upcoach.errors import ModelStateConflict
from upcoach.modelstore.manager import ModelManager, PullSpec
from upcoach.modelstore.store import ModelStore
from upcoach.modelstore.swap import SwappableBackend
from upcoach.observability.audit import AuditLog


async def test_a_version_still_downloading_cannot_be_deleted(
    settings: Settings, store: ModelStore, audit: AuditLog, file_server: FileServer
) -> None:
    data = gguf_bytes(300_000, seed=11)
    held = Behaviour(hang_after=100_000)
    url = file_server.add("slow.gguf", data, held)
    manager = ModelManager(settings, store.registry, store, SwappableBackend(), audit)
    spec = PullSpec.parse(source=url, model_id=None, name="slow", version="1", sha256=hashlib.sha256(data).hexdigest())
    job = await manager.download(spec, actor="ops")
    try:
        for _ in range(200):  # until the row exists and bytes are arriving
            versions = {version.id: version for version in await store.registry.list()}
            if "slow@1" in versions and job.bytes_done > 0:
                break
            await asyncio.sleep(0.05)
        assert versions["slow@1"].status == "downloading"
        with pytest.raises(ModelStateConflict, match="still being downloaded"):
            await manager.delete("slow@1", actor="ops")
    finally:
        held.release.set()
    for _ in range(200):
        if job.status in ("done", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job.status == "done", job
    await manager.delete("slow@1", actor="ops")
    assert "slow@1" not in {version.id for version in await store.registry.list()}
    await manager.aclose()


async def test_a_worker_of_several_refuses_to_swap_the_model_it_does_not_hold(
    settings: Settings, store: ModelStore, audit: AuditLog, tmp_path: Path
) -> None:
    """With `serve --workers N` the model lives in the engine process: a swap in a worker would load a second copy
    that serves nobody, so every swap is refused with a 409 saying what to do instead."""
    worker = settings.model_copy(update={"engine_socket": tmp_path / "engine.sock", "workers": 2})
    manager = ModelManager(worker, store.registry, store, SwappableBackend(), audit)
    attempts = (
        manager.activate("any", actor="ops"),
        manager.rollback(actor="ops"),
        manager.update(model_id="any", spec=None, actor="ops"),
        manager.start_experiment("any", 0.5, actor="ops"),
    )
    for attempt in attempts:
        with pytest.raises(ModelStateConflict, match="engine process"):
            await attempt
