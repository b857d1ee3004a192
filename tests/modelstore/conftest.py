"""Model store fixtures: a file server of our own that can misbehave, a store on a real database, test files."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.storage.conftest import database_url, db, migrated_db, postgres_url  # noqa: F401 (fixtures)
from upcoach.config import Settings
from upcoach.modelstore.crypto import StaticKeyProvider
from upcoach.modelstore.registry import ModelRegistry
from upcoach.modelstore.store import ModelStore
from upcoach.observability.audit import AuditLog
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database

CHUNK = 64 * 1024


def gguf_bytes(size: int, seed: int = 0) -> bytes:
    """A synthetic 'model': GGUF magic, then pseudo-random bytes (distinct per seed)."""
    body = hashlib.shake_256(f"model-{seed}".encode()).digest(size - 4)
    return b"GGUF" + body


@dataclass
class Behaviour:
    """How the server misbehaves for one file. ``drops``: how many responses are cut after ``drop_after`` body
    bytes. ``hang_after``: send that many bytes, then stall until ``release`` is set."""

    drop_after: int | None = None
    drops: int = 0
    corrupt_at: int | None = None
    status: int | None = None
    extra_length: int = 0
    ignore_range: bool = False
    hang_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                behaviour = server.behaviours.setdefault(name, Behaviour())
                if name not in server.files or behaviour.status is not None:
                    self.send_error(behaviour.status or 404)
                    return
                data = server.files[name]
                if behaviour.corrupt_at is not None:
                    flipped = data[behaviour.corrupt_at] ^ 0xFF
                    data = data[: behaviour.corrupt_at] + bytes([flipped]) + data[behaviour.corrupt_at + 1 :]
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not behaviour.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body) + behaviour.extra_length))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                limit = len(body)
                if behaviour.drops > 0 and behaviour.drop_after is not None:
                    behaviour.drops -= 1
                    limit = behaviour.drop_after
                if behaviour.hang_after is not None:
                    self.wfile.write(body[: behaviour.hang_after])
                    self.wfile.flush()
                    behaviour.release.wait(60)
                    return
                self.wfile.write(body[:limit])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def add(self, name: str, data: bytes, behaviour: Behaviour | None = None) -> str:
        self.files[name] = data
        self.behaviours[name] = behaviour or Behaviour()
        return self.url(name)

    def ranges(self, name: str) -> list[str | None]:
        return [header for served, header in self.requests if served == name]


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    yield server
    for behaviour in server.behaviours.values():
        behaviour.release.set()
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def model_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def settings(tmp_path: Path, model_key: bytes) -> Settings:
    # The test file server is on loopback, which downloads may reach only when the operator allows it.
    return Settings(
        data_dir=tmp_path / "data", model_key=model_key.hex(), model_source_allow=["127.0.0.1"], _env_file=None
    )  # type: ignore[call-arg]


@pytest.fixture
async def store_db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
def audit(store_db: Database) -> AuditLog:
    return AuditLog(AuditRepository(store_db), os.urandom(32))


@pytest.fixture
def store(settings: Settings, store_db: Database, model_key: bytes, audit: AuditLog) -> ModelStore:
    return ModelStore(
        settings, ModelRegistry(store_db), StaticKeyProvider(model_key), audit, chunk_size=CHUNK, retry_delay=0.01
    )
