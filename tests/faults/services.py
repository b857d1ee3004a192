"""Private copies of the services a fault takes away: a Redis and a PostgreSQL of the test's own on other loopback
ports (the machine's shared ones are never stopped), and a small tmpfs for the data folder's disk-full fault."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.conftest import free_port


class PrivateRedis:
    """``redis-server`` on its own port, without persistence; ``kill()`` and ``start()`` again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster made with initdb in a temporary folder, run by the ``postgres`` user (the server refuses
    root); ``restart()`` is a real stop (fast: every connection is closed) and start."""

    def __init__(self) -> None:
        binaries = _postgres_bin()
        if binaries is None or shutil.which("runuser") is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = binaries
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="upcoach-pg-"))
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-o", options,
                          "-l", str(self.root / "log"), "-m", "fast", "-w", action)  # fmt: skip

    def start(self) -> None:
        if not (self.root / "data").exists():
            self._as_postgres(str(self.bin / "initdb"), "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres")
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def small_disk(size_mb: int) -> Iterator[Path | None]:
    """A tmpfs of ``size_mb`` (None where mounting is not allowed: the disk-full scenario is then skipped)."""
    mountpoint = Path(tempfile.mkdtemp(prefix="upcoach-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mountpoint)],
                             capture_output=True).returncode == 0  # fmt: skip
    try:
        yield mountpoint if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
        shutil.rmtree(mountpoint, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Fill the file system ``folder`` is on; returns the filler file (delete it to heal)."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):  # big blocks first, then the last crumbs
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * size)
    return filler
