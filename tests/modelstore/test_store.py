"""The model store against our own HTTP server: verified, encrypted, resumable downloads and their failures."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.modelstore.conftest import CHUNK, Behaviour, FileServer, gguf_bytes
from upcoach.errors import (
    ChecksumMismatch,
    FetchFailed,
    InvalidRequest,
    ModelInUse,
    ModelNotFound,
    ModelTampered,
    StorageFull,
)
from upcoach.modelstore import crypto
from upcoach.modelstore.crypto import HEADER_SIZE, TAG_SIZE
from upcoach.modelstore.store import ModelStore
from upcoach.observability.audit import AuditLog

SIZE = 10 * CHUNK + 1234


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_no_plaintext(store: ModelStore, data: bytes) -> None:
    """No file in the store holds the model's magic at its start or any recognisable piece of it."""
    probe = data[1000:1064]
    for path in store.dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not content.startswith(b"GGUF"), path
            assert probe not in content, path


async def plaintext(store: ModelStore, id: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([block async for block in store.read_plaintext_range(id, start, end)])


async def test_url_download_is_verified_encrypted_and_readable(store: ModelStore, file_server: FileServer) -> None:
    data = gguf_bytes(SIZE)
    url = file_server.add("coach-Q4_K_M.gguf", data)
    seen: list[tuple[int, int | None]] = []
    version = await store.pull(url, sha256=sha(data).upper(), progress=lambda done, total: seen.append((done, total)))
    assert version.id == f"coach-Q4_K_M@{sha(data)[:12]}"
    assert (version.status, version.size, version.sha256, version.quantization) == ("ready", SIZE, sha(data), "Q4_K_M")
    assert seen[-1] == (SIZE, SIZE) and all(total == SIZE for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert Path(version.path) == store.file_for(version.id) and not store.part_for(version.id).exists()
    assert_no_plaintext(store, data)
    assert await plaintext(store, version.id) == data
    assert await plaintext(store, version.id, CHUNK - 5, 3 * CHUNK + 7) == data[CHUNK - 5 : 3 * CHUNK + 7]
    # Pulling again is a no-op that returns the installed version.
    assert (await store.pull(url, sha256=sha(data))).id == version.id
    assert len(file_server.ranges("coach-Q4_K_M.gguf")) == 1


async def test_dropped_connections_resume_with_range_requests(store: ModelStore, file_server: FileServer) -> None:
    data = gguf_bytes(SIZE, seed=1)
    url = file_server.add("m.gguf", data, Behaviour(drop_after=3 * CHUNK + 100, drops=3))
    version = await store.pull(url, name="m", version="1", sha256=sha(data))
    ranges = file_server.ranges("m.gguf")
    # The buffered tail of a chunk survives in memory, so each retry continues at the exact byte.
    assert ranges == [None] + [f"bytes={n * (3 * CHUNK + 100)}-" for n in (1, 2, 3)]
    assert await plaintext(store, version.id) == data


async def test_a_server_that_ignores_range_is_skipped_not_duplicated(
    store: ModelStore, file_server: FileServer
) -> None:
    data = gguf_bytes(SIZE, seed=2)
    url = file_server.add("m.gguf", data, Behaviour(drop_after=CHUNK * 2 + 3, drops=1, ignore_range=True))
    version = await store.pull(url, name="m", version="1", sha256=sha(data))
    assert len(file_server.ranges("m.gguf")) == 2
    assert await plaintext(store, version.id) == data


async def test_wrong_content_lengths(store: ModelStore, file_server: FileServer) -> None:
    data = gguf_bytes(SIZE, seed=3)
    # Too long: the body ends early, the resume finds nothing left (416 */size) and the file is complete.
    url = file_server.add("long.gguf", data, Behaviour(extra_length=500))
    assert await plaintext(store, (await store.pull(url, name="long", version="1", sha256=sha(data))).id) == data
    # Too short: the file is cut, and the checksum refuses it.
    url = file_server.add("short.gguf", data, Behaviour(extra_length=-500))
    with pytest.raises(ChecksumMismatch):
        await store.pull(url, name="short", version="1", sha256=sha(data))
    assert (await store.registry.get("short@1")).status == "failed"
    assert not store.part_for("short@1").exists() and not store.file_for("short@1").exists()


async def test_corrupted_bytes_are_refused_and_removed(store: ModelStore, file_server: FileServer) -> None:
    data = gguf_bytes(SIZE, seed=4)
    url = file_server.add("bad.gguf", data, Behaviour(corrupt_at=5 * CHUNK))
    with pytest.raises(ChecksumMismatch) as refused:
        await store.pull(url, name="bad", version="1", sha256=sha(data))
    assert refused.value.status == 400 and refused.value.code == "checksum_mismatch"
    failed = await store.registry.get("bad@1")
    assert failed.status == "failed" and "does not match" in (failed.error or "")
    assert [p.name for p in store.dir.iterdir() if p.is_file()] == []


@pytest.mark.parametrize(
    ("source", "sha256", "param"),
    [
        ("ftp://127.0.0.1/m.gguf", "ab" * 32, "source"),
        ("http:///m.gguf", "ab" * 32, "source"),
        ("http://127.0.0.1/m.gguf", None, "sha256"),
        ("http://127.0.0.1/m.gguf", "xyz", "sha256"),
        ("http://127.0.0.1/m.gguf", "ab" * 31, "sha256"),
    ],
)
async def test_bad_urls_and_checksums_are_400(store: ModelStore, source: str, sha256: str | None, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await store.pull(source, sha256=sha256)
    assert refused.value.status == 400 and refused.value.param == param
    assert await store.registry.list() == []


async def test_unknown_catalog_ids_and_http_errors(store: ModelStore, file_server: FileServer) -> None:
    with pytest.raises(ModelNotFound):
        await store.pull("no-such-model")
    with pytest.raises(FetchFailed, match="HTTP 404"):
        await store.pull(file_server.url("absent.gguf"), name="absent", version="1", sha256="ab" * 32)
    assert len(file_server.ranges("absent.gguf")) == 1  # a refusal is not retried
    with pytest.raises(FetchFailed, match="attempts"):
        await store.pull("http://127.0.0.1:9/m.gguf", name="closed", version="1", sha256="ab" * 32)
    data = b"not a gguf file at all" * 100
    url = file_server.add("text.gguf", data)
    with pytest.raises(InvalidRequest, match="not a GGUF"):
        await store.pull(url, name="text", version="1", sha256=sha(data))


async def test_a_full_disk_fails_cleanly_and_the_active_model_stays(
    store: ModelStore, file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = gguf_bytes(SIZE, seed=5)
    active = await store.import_file(_write(tmp_path / "a.gguf", data), "active", "1")
    await store.registry.activate(active.id)

    sealed = crypto.EncryptedWriter._seal

    def seal(self: crypto.EncryptedWriter, plaintext: bytes, *, final: bool) -> None:
        if self.committed >= 4 * CHUNK:
            raise OSError(errno.ENOSPC, "No space left on device")
        sealed(self, plaintext, final=final)

    monkeypatch.setattr(crypto.EncryptedWriter, "_seal", seal)
    url = file_server.add("big.gguf", gguf_bytes(SIZE, seed=6))
    with pytest.raises(StorageFull) as full:
        await store.pull(url, name="big", version="1", sha256=sha(file_server.files["big.gguf"]))
    assert full.value.status == 507
    assert (await store.registry.get("big@1")).status == "failed"
    assert not store.part_for("big@1").exists() and not store.file_for("big@1").exists()
    monkeypatch.undo()
    assert (await store.registry.active()).id == active.id  # type: ignore[union-attr]
    assert await plaintext(store, active.id) == data


async def test_import_checks_the_file_and_leaves_no_plaintext(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes(SIZE, seed=7)
    source = _write(tmp_path / "local.gguf", data)
    with pytest.raises(ChecksumMismatch):
        await store.import_file(source, "local", "1", sha256="00" * 32)
    assert not store.file_for("local@1").exists()
    version = await store.import_file(source, "local")
    assert (version.version, version.sha256, version.source) == (sha(data)[:12], sha(data), f"file:{source}")
    assert source.read_bytes() == data  # the original is left alone
    assert_no_plaintext(store, data)
    with pytest.raises(InvalidRequest, match="not a file"):
        await store.import_file(tmp_path / "missing.gguf", "x", "1")


async def test_tampered_files_are_refused_with_an_audit_event(
    store: ModelStore, audit: AuditLog, tmp_path: Path
) -> None:
    data = gguf_bytes(SIZE, seed=8)
    version = await store.import_file(_write(tmp_path / "m.gguf", data), "m", "1")
    path = Path(version.path)
    _flip(path, HEADER_SIZE + 3 * (CHUNK + TAG_SIZE) + 7)
    with pytest.raises(ModelTampered, match="chunk 3") as refused:
        async with store.open_plaintext(version.id):
            pytest.fail("a tampered model must not be opened")
    assert refused.value.code == "model_tampered"
    # Range reads authenticate the chunks they touch: chunk 0 is fine, chunk 3 is not.
    assert await plaintext(store, version.id, 0, 100) == data[:100]
    with pytest.raises(ModelTampered):
        await plaintext(store, version.id, 3 * CHUNK, 3 * CHUNK + 1)
    _truncate(path)
    with pytest.raises(ModelTampered, match="truncated"):
        async with store.open_plaintext(version.id):
            pass
    events = await audit.query(action="model.tampered")
    assert [e.target for e in events] == [version.id] * 3
    assert (await audit.verify()).ok


async def test_a_file_swapped_for_another_models_file_is_refused(store: ModelStore, tmp_path: Path) -> None:
    one = await store.import_file(_write(tmp_path / "1.gguf", gguf_bytes(SIZE, seed=9)), "m", "1")
    two = await store.import_file(_write(tmp_path / "2.gguf", gguf_bytes(SIZE, seed=10)), "m", "2")
    _copy(Path(two.path), Path(one.path))
    with pytest.raises(ModelTampered, match="another model"):
        async with store.open_plaintext(one.id):
            pass


async def test_open_plaintext_is_an_in_memory_file(store: ModelStore, tmp_path: Path) -> None:
    data = gguf_bytes(SIZE, seed=11)
    version = await store.import_file(_write(tmp_path / "m.gguf", data), "m", "1")
    async with store.open_plaintext(version.id) as path:
        assert str(path).startswith("/proc/self/fd/")
        assert os.readlink(path).startswith("/memfd:")
        assert path.read_bytes() == data
        with pytest.raises(PermissionError):
            _overwrite(path)  # sealed: nobody can change what was authenticated
    assert not _exists(path)


async def test_delete_refuses_the_active_version(store: ModelStore, tmp_path: Path) -> None:
    source = _write(tmp_path / "m.gguf", gguf_bytes(SIZE, seed=12))
    one = await store.import_file(source, "m", "1")
    two = await store.import_file(source, "m", "2")
    await store.registry.activate(one.id)
    with pytest.raises(ModelInUse):
        await store.delete(one.id)
    await store.delete(two.id)
    assert not _exists(Path(two.path)) and _exists(Path(one.path))
    with pytest.raises(ModelNotFound):
        await store.delete(two.id)


RESTART_SCRIPT = """
import asyncio, sys
from upcoach.config import Settings
from upcoach.modelstore.crypto import StaticKeyProvider
from upcoach.modelstore.registry import ModelRegistry
from upcoach.modelstore.store import ModelStore
from upcoach.storage.database import Database

async def main():
    settings = Settings(data_dir=sys.argv[1], model_source_allow=["127.0.0.1"])
    db = Database(settings.effective_database_url)
    await db.migrate()
    store = ModelStore(settings, ModelRegistry(db), StaticKeyProvider(bytes.fromhex(sys.argv[2])), chunk_size=%d)
    await store.pull(sys.argv[3], name="m", version="1", sha256=sys.argv[4])

asyncio.run(main())
"""


async def test_a_killed_download_resumes_in_the_next_process(
    store: ModelStore, file_server: FileServer, model_key: bytes
) -> None:
    data = gguf_bytes(SIZE, seed=13)
    stall = 6 * CHUNK + 500
    url = file_server.add("m.gguf", data, Behaviour(hang_after=stall))
    part = store.part_for("m@1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RESTART_SCRIPT % CHUNK, str(store.settings.data_dir), model_key.hex(), url, sha(data),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        # A chunk is written once a byte after it arrived: 6 whole chunks are on disk when the server stalls.
        while _size(part) < HEADER_SIZE + 6 * (CHUNK + TAG_SIZE):
            assert process.returncode is None, await process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the download never got going"
            await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert (await store.registry.get("m@1")).status == "downloading"
    file_server.behaviours["m.gguf"] = Behaviour()
    version = await store.pull(url, name="m", version="1", sha256=sha(data))
    assert file_server.ranges("m.gguf") == [None, f"bytes={6 * CHUNK}-"]
    assert await plaintext(store, version.id) == data
    assert_no_plaintext(store, data)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x80
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _copy(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes())


def _overwrite(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.write(b"X")


def _exists(path: Path) -> bool:
    return path.exists()


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
