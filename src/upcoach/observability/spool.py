"""A local append-only file of request records the database could not take: one JSON object per line, fsync'd.

Written when the database is down at shutdown or the writer's queue is full, read back by the next start (or as
soon as the database answers again). Replaying renames the file first, so records spooled meanwhile go to a new
file and are never truncated away; a replay that is interrupted leaves the renamed file for the next attempt.
The spool belongs to one server process: with ``--workers N`` each worker claims a folder of its own
(``claim_folder``), and a worker started after one died takes over the dead one's folder and replays it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from upcoach.storage.requests import RequestRecord

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A record waiting to be written, and when its request started (what an erasure fence compares)."""

    record: RequestRecord
    started_at: datetime


def encode(item: Pending) -> str:
    data = asdict(item.record)
    data["created_at"] = item.record.created_at.isoformat()
    return json.dumps({"record": data, "started_at": item.started_at.isoformat()}, separators=(",", ":"))


def decode(line: str) -> Pending:
    data = json.loads(line)
    record = dict(data["record"])
    record["created_at"] = datetime.fromisoformat(record["created_at"])
    return Pending(RequestRecord(**record), datetime.fromisoformat(data["started_at"]))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_lines(path: Path, lines: Sequence[str]) -> None:
    """Append whole lines (each ending in a newline) and wait until they are on disk, the new file's name too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with path.open("a", encoding="utf-8") as file:
        file.write("".join(lines))
        file.flush()
        os.fsync(file.fileno())
    if created:
        _fsync_dir(path.parent)


def claim_folder(root: Path, workers: int) -> tuple[Path, int | None]:
    """The spool folder of this process, and the descriptor that holds its claim (keep it open while serving).

    One process: ``root`` itself. Several workers sharing a data folder: ``root/worker-<i>``, claimed by an
    exclusive ``flock`` on ``root/worker-<i>.lock`` that the kernel releases when the process dies, so the worker
    that replaces a dead one finds the dead one's folder free and replays what it left.
    """
    if workers <= 1:
        return root, None
    root.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:  # at most workers + restarting ones hold a slot at once: this ends
        fd = os.open(root / f"worker-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            slot += 1
            continue
        return root / f"worker-{slot}", fd


class Spool:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "records.jsonl"
        self.replaying = folder / "records.replaying.jsonl"
        self.count = sum(self._lines(p) for p in (self.path, self.replaying))

    @staticmethod
    def _lines(path: Path) -> int:
        if not path.exists():
            return 0
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())

    def append(self, items: Sequence[Pending]) -> None:
        """Add records at the end and wait until they are on disk."""
        if not items:
            return
        append_lines(self.path, [encode(item) + "\n" for item in items])
        self.count += len(items)

    def take(self) -> list[Pending]:
        """The records to replay: the file left by an interrupted replay, plus the current file (renamed into it)."""
        if self.path.exists():
            if self.replaying.exists():
                append_lines(self.replaying, self.path.read_text(encoding="utf-8").splitlines(keepends=True))
                self.path.unlink()
            else:
                self.path.rename(self.replaying)
            _fsync_dir(self.folder)
        return self._read(self.replaying)

    def replayed(self) -> None:
        """Every record taken was written (or set aside): forget them."""
        self.replaying.unlink(missing_ok=True)
        self.count = self._lines(self.path)

    def purge(self, user_id: str) -> int:
        """Remove one user's records from both files (erasure); returns how many were removed."""
        removed = 0
        for path in (self.path, self.replaying):
            items = self._read(path)
            keep = [item for item in items if item.record.user_id != user_id]
            if len(keep) == len(items):
                continue
            removed += len(items) - len(keep)
            self._rewrite(path, keep)
        self.count -= removed
        return removed

    def _rewrite(self, path: Path, items: Iterable[Pending]) -> None:
        temporary = path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            file.write("".join(encode(item) + "\n" for item in items))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_dir(self.folder)

    @staticmethod
    def _read(path: Path) -> list[Pending]:
        if not path.exists():
            return []
        items = []
        with path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    items.append(decode(line))
                except (ValueError, KeyError, TypeError):
                    # A line cut short by a crash while appending: the rest of the file is still good.
                    log.error("spooled request record at %s:%d is unreadable and is skipped", path, number)
        return items


class WriteAhead:
    """Every queued record, appended to ``records.wal.jsonl`` the moment it is queued, so a killed process loses
    none: the next start moves what the file holds into the spool (``recover``), and the replay writes it (replays
    are idempotent on the id, so rows that did reach the database before the kill are not doubled).

    Not fsync'd per record: a process killed (SIGKILL, OOM) leaves its written pages to the kernel, which keeps
    them; only a power loss could take the last ones, and fsync per answered request would cost more than the
    answer. Emptied whenever the writer has nothing queued or in flight. A write that fails (disk full) is logged
    once per run and the record stays queued: serving never stops for it.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "records.wal.jsonl"
        self._fd: int | None = None
        self._warned = False

    def recover(self, spool: Spool) -> int:
        """Move what a killed process left into ``spool``; returns how many records."""
        items = Spool._read(self.path)
        if items:
            spool.append(items)
            log.warning("recovered %d request records queued by a process that did not stop cleanly", len(items))
        self.path.unlink(missing_ok=True)
        return len(items)

    def note(self, item: Pending) -> None:
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, (encode(item) + "\n").encode())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.error("request record write-ahead file %s not written (%s); records stay in memory",
                          self.path, exc)  # fmt: skip

    def settled(self) -> None:
        """Nothing is queued or in flight: every noted record is in the database or the spool."""
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                log.exception("could not empty %s", self.path)

    def purge(self, user_id: str) -> None:
        """Erasure: the user's lines go from the file too (the fence would refuse them anyway)."""
        items = Spool._read(self.path)
        keep = [item for item in items if item.record.user_id != user_id]
        if len(keep) == len(items):
            return
        self.close()
        Spool(self.path.parent)._rewrite(self.path, keep)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
