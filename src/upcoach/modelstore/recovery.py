"""Crash recovery for model changes: what a killed process left half-done, settled at the next start, unattended.

- jobs still ``queued``/``running``: their process is gone, they are marked failed (registry.JobRepository);
- versions still ``downloading``/``verifying``: marked failed with the reason, so the list shows no download that
  nobody runs. A URL download's encrypted partial file stays (the next pull of the same version resumes it); any
  other source's partial file is deleted (it restarts from the beginning anyway);
- encrypted partial files no version owns, and the catalog fetch's plaintext ``.partial`` file and temporary
  folders (fetch.py): deleted.

A version another live process is installing holds its lock (store.py ``_exclusive``) and is left alone, as is a
catalog fetch written to within ``FETCH_IDLE_SECONDS``. Swaps need nothing here: the active version is one database
row changed in one transaction, and a loaded model lives only in the memory of the process that died.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from upcoach.modelstore.registry import JobRepository, ModelRegistry, ModelVersion
from upcoach.modelstore.store import PART_SUFFIX
from upcoach.storage.database import Database

log = logging.getLogger(__name__)

UNFINISHED = ("downloading", "verifying")
INTERRUPTED = "interrupted by a restart: pull it again (a URL download resumes where it stopped)"
FETCH_IDLE_SECONDS = 300.0


@dataclass(frozen=True)
class Recovered:
    jobs: int = 0
    versions: int = 0
    files: int = 0


def _locked_elsewhere(lock: Path) -> bool:
    if not lock.exists():
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


async def recover(db: Database, models_dir: Path) -> Recovered:
    """Settle what an earlier process left unfinished; returns what it changed (logged when anything)."""
    jobs = await JobRepository(db).fail_unfinished()
    registry = ModelRegistry(db)
    versions = await registry.list()
    unfinished = [version for version in versions if version.status in UNFINISHED]
    orphaned = await asyncio.to_thread(_orphaned, models_dir / "store", unfinished)
    for version in orphaned:
        await registry.set_status(version.id, "failed", INTERRUPTED)
    files = await asyncio.to_thread(_clean_files, models_dir, orphaned, {version.id for version in versions})
    result = Recovered(jobs, len(orphaned), files)
    if jobs or orphaned or files:
        log.warning("recovered after an unclean stop: %d model jobs and %d model downloads marked failed, "
                    "%d partial files removed", jobs, len(orphaned), files)  # fmt: skip
    return result


def _orphaned(store: Path, unfinished: list[ModelVersion]) -> list[ModelVersion]:
    return [version for version in unfinished if not _locked_elsewhere(store / ".locks" / version.id)]


def _clean_files(models_dir: Path, orphaned: list[ModelVersion], known: set[str]) -> int:
    store = models_dir / "store"
    removed = []
    for version in orphaned:
        part = store / f"{version.id}{PART_SUFFIX}"
        if not version.source.startswith(("http://", "https://")) and part.exists():
            removed.append(part)
    if store.is_dir():
        removed += [part for part in store.glob(f"*{PART_SUFFIX}") if part.name.removesuffix(PART_SUFFIX) not in known]
    stale = time.time() - FETCH_IDLE_SECONDS
    if models_dir.is_dir():
        leftovers = (*models_dir.glob("*.partial"), *models_dir.glob("upcoach-fetch-*"))
        removed += [leftover for leftover in leftovers if leftover.stat().st_mtime < stale]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(removed)
