"""Take a test database away for real and bring it back: the database stopped mid-run, not a fake that raises.

PostgreSQL is shared by every test session on the machine, so it is not stopped: the code under test connects
through a loopback TCP proxy, and stopping the proxy closes the port and every connection through it. SQLite is
a file: its files are moved aside and a folder takes the database's name, so opening it fails until they are back.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import free_port
from upcoach.storage.database import Database

_SQLITE_FILES = ("", "-wal", "-shm")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class Outage:
    def __init__(self, database_url: str, tmp: Path) -> None:
        self._real = make_url(database_url)
        self._tmp = tmp
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = free_port()
        if self._real.get_backend_name() == "postgresql":
            self.url = self._real.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        else:
            self.url = database_url

    async def start(self) -> None:
        """The database is reachable (for PostgreSQL: the proxy listens)."""
        if self._real.get_backend_name() != "postgresql":
            return

        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(self._real.host, self._real.port or 5432)
            self._writers += [writer, up_writer]
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        self._server = await asyncio.start_server(forward, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self, *users: Database) -> None:
        """The database goes away; ``users`` lose their pooled connections as they would in a real outage."""
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            self._writers.clear()
            await self._server.wait_closed()
            self._server = None
        else:
            self._move_aside()
        for db in users:
            await db.engine.dispose()

    async def restore(self) -> None:
        if self._real.get_backend_name() == "postgresql":
            await self.start()
            return
        self._move_back()

    def _move_aside(self) -> None:
        path = Path(str(self._real.database))
        aside = self._tmp / "aside"
        aside.mkdir(exist_ok=True)
        for suffix in _SQLITE_FILES:
            if Path(f"{path}{suffix}").exists():
                shutil.move(f"{path}{suffix}", aside / f"db{suffix}")
        path.mkdir()

    def _move_back(self) -> None:
        path = Path(str(self._real.database))
        path.rmdir()
        for suffix in _SQLITE_FILES:
            if (self._tmp / "aside" / f"db{suffix}").exists():
                shutil.move(self._tmp / "aside" / f"db{suffix}", f"{path}{suffix}")
