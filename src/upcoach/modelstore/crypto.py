"""Model files at rest: AES-256-GCM in authenticated chunks, written as a stream and readable at any offset.

Layout: a 64-byte header, then chunks of ``chunk_size`` plaintext bytes (the last one may be shorter; only an
empty file has an empty chunk), each stored as ciphertext + 16-byte tag. Why it is built this way:

- Chunks, not one GCM message: a 500 MB model can be decrypted into memory, or served by HTTP Range, one chunk at
  a time, and every chunk is authenticated before a single byte of it is used.
- Nonce = 8 random bytes chosen per file + the chunk index (4 bytes). A file never reuses a nonce; files differ
  in their random prefix. (One exception, accepted: a download resumed after a crash re-encrypts the chunk that
  was being written when the process died, from the same bytes of the same URL; had they changed, the sha256
  check refuses the file and it is deleted.)
- Associated data of chunk i = the static header fields + i + a final-chunk flag (the STREAM construction): a
  chunk moved to another index or file fails, a file cut after any chunk lacks its final chunk, bytes appended
  after the final chunk are refused. The total chunk count is not known while a download streams in, so it is
  not in each chunk's associated data; the header carries the plaintext size under a tag of its own (written
  when the stream ends), which fixes the count, and the file length must match it exactly.
- A caller-chosen ``context`` (the store passes the model id) is bound into every tag without being stored:
  a valid file copied over another model's file fails to open under that model's name.
- The header names the key by id, so a future key provider can rotate keys and still open older files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from upcoach.config import Settings
from upcoach.errors import ModelKeyUnavailable, ModelTampered
from upcoach.security.keyfiles import create_key_file, decode_key

log = logging.getLogger(__name__)

MAGIC = b"UCMODEL\x00"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
HEADER_SIZE = 64
KEY_FILE = "model.key"
_UNKNOWN_SIZE = 2**64 - 1
# magic, format version, chunk size, file nonce prefix, key id: bound into every chunk's associated data.
_STATIC = struct.Struct(">8sHI8s16s")
_HEADER_NONCE_COUNTER = 2**32 - 1  # the header tag's nonce; chunk indexes stay below it
_MAX_CHUNKS = 2**32 - 1


class KeyProvider(Protocol):
    """Where model keys come from. ``current_key_id`` names the key new files are encrypted with; ``key_for``
    returns the 32-byte key for an id found in a file header, or raises ``ModelKeyUnavailable``.

    A HashiCorp Vault provider slots in here: fetch the data key once at start (or unwrap it with Vault's
    transit engine) and return it from ``key_for``; ids let it keep old keys readable after a rotation.
    """

    @property
    def current_key_id(self) -> str: ...

    def key_for(self, key_id: str) -> bytes: ...


def key_id_of(key: bytes) -> str:
    """A public fingerprint of a key (16 hex characters of SHA-256 over a label and the key)."""
    return hashlib.sha256(b"upcoach-model-key\x00" + key).hexdigest()[:16]


class StaticKeyProvider:
    """One key held in memory."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a model key has 32 bytes, got {len(key)}")
        self._key = key
        self._id = key_id_of(key)

    @property
    def current_key_id(self) -> str:
        return self._id

    def key_for(self, key_id: str) -> bytes:
        if key_id != self._id:
            raise ModelKeyUnavailable(
                f"this model was encrypted with key {key_id}, but the configured key is {self._id} "
                "(UPCOACH_MODEL_KEY changed, or model.key was replaced)"
            )
        return self._key


def parse_model_key(value: str) -> bytes:
    """64 hex characters, or standard / URL-safe base64 of exactly 32 bytes."""
    return decode_key(value, name="UPCOACH_MODEL_KEY", size=32)


class EnvKeyProvider(StaticKeyProvider):
    """The key from ``UPCOACH_MODEL_KEY`` (settings.model_key); a bad value fails at start, not at first use."""

    def __init__(self, value: str) -> None:
        super().__init__(parse_model_key(value))


class FileKeyProvider:
    """A key generated into ``<data_dir>/model.key`` (mode 0600) the first time a model is encrypted.

    Lazy, so that servers which never store a model never create the file. Losing the file makes every stored
    model unreadable (they can be pulled again); the warning says so once, when the key is made.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._inner: StaticKeyProvider | None = None

    def _load(self) -> StaticKeyProvider:
        if self._inner is None:
            if not self._path.exists():
                create_key_file(self._path)
                log.warning(
                    "generated the model encryption key %s (mode 0600); back it up or set UPCOACH_MODEL_KEY: "
                    "without it the stored models cannot be decrypted",
                    self._path,
                )
            mode = stat.S_IMODE(self._path.stat().st_mode)
            if mode & 0o077:
                log.warning("model key %s is readable by others (mode %o); chmod 600 it", self._path, mode)
            self._inner = EnvKeyProvider(self._path.read_text())
        return self._inner

    @property
    def current_key_id(self) -> str:
        return self._load().current_key_id

    def key_for(self, key_id: str) -> bytes:
        return self._load().key_for(key_id)


def model_key_provider(settings: Settings) -> KeyProvider:
    """UPCOACH_MODEL_KEY if set (validated now), else the generated key file in the data dir."""
    if settings.model_key is not None:
        return EnvKeyProvider(settings.model_key.get_secret_value())
    return FileKeyProvider(settings.data_dir / KEY_FILE)


@dataclass(frozen=True)
class Header:
    chunk_size: int
    nonce_prefix: bytes
    key_id: str
    plaintext_size: int | None = None  # None while the stream is still being written

    def static(self) -> bytes:
        return _STATIC.pack(MAGIC, FORMAT_VERSION, self.chunk_size, self.nonce_prefix, self.key_id.encode())

    def chunk_count(self) -> int:
        assert self.plaintext_size is not None
        return max(1, -(-self.plaintext_size // self.chunk_size))  # an empty file is one empty final chunk

    def file_size(self) -> int:
        return HEADER_SIZE + (self.chunk_count() * TAG_SIZE) + (self.plaintext_size or 0)

    def pack(self, key: bytes, context: bytes) -> bytes:
        size = _UNKNOWN_SIZE if self.plaintext_size is None else self.plaintext_size
        body = self.static() + struct.pack(">Q", size)
        body += b"\x00" * (HEADER_SIZE - TAG_SIZE - len(body))
        if self.plaintext_size is None:
            return body + b"\x00" * TAG_SIZE
        nonce = _nonce(self.nonce_prefix, _HEADER_NONCE_COUNTER)
        return body + AESGCM(key).encrypt(nonce, b"", body + _context_digest(context))


def _context_digest(context: bytes) -> bytes:
    return hashlib.sha256(b"upcoach-model-context\x00" + context).digest()


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + struct.pack(">I", counter)


def _chunk_aad(prefix: bytes, index: int, final: bool) -> bytes:
    """``prefix`` = the header's static fields + the context digest."""
    return prefix + struct.pack(">QB", index, 1 if final else 0)


def read_header(handle: BinaryIO, keys: KeyProvider, context: bytes, *, complete: bool = True) -> tuple[Header, bytes]:
    """Parse and (for a complete file) authenticate the header; returns it with the key it names."""
    raw = handle.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise ModelTampered("model file is shorter than its header (truncated)")
    magic, version, chunk_size, prefix, key_id_raw = _STATIC.unpack_from(raw)
    if magic != MAGIC:
        raise ModelTampered("not an encrypted model file (bad magic)")
    if version != FORMAT_VERSION or chunk_size <= 0:
        raise ModelTampered(f"unsupported model file format version {version} or chunk size {chunk_size}")
    (size,) = struct.unpack_from(">Q", raw, _STATIC.size)
    key_id = key_id_raw.rstrip(b"\x00").decode("ascii", errors="replace")
    key = keys.key_for(key_id)
    header = Header(chunk_size, prefix, key_id, None if size == _UNKNOWN_SIZE else size)
    if complete:
        if header.plaintext_size is None:
            raise ModelTampered("model file was never finished (no plaintext size in its header)")
        body, tag = raw[: HEADER_SIZE - TAG_SIZE], raw[HEADER_SIZE - TAG_SIZE :]
        try:
            AESGCM(key).decrypt(_nonce(prefix, _HEADER_NONCE_COUNTER), tag, body + _context_digest(context))
        except InvalidTag:
            raise ModelTampered(
                "model file header fails authentication (edited, another model's file, or another key)"
            ) from None
    return header, key


class EncryptedWriter:
    """Encrypts a plaintext stream into a file as it arrives; ``finish`` seals it.

    Only whole chunks reach the disk, and a chunk is written only once more data is known to follow, so the last
    chunk written by ``finish`` is always the one flagged final. ``committed`` counts the plaintext bytes on
    disk: after a crash, ``resume`` reopens the file there.
    """

    def __init__(self, handle: BinaryIO, header: Header, key: bytes, context: bytes, committed: int) -> None:
        self._handle = handle
        self._header = header
        self._context = context
        self._static = header.static() + _context_digest(context)
        self._aead = AESGCM(key)
        self._key = key
        self._buffer = bytearray()
        self.committed = committed

    @classmethod
    def create(
        cls, path: Path, keys: KeyProvider, *, context: bytes = b"", chunk_size: int = CHUNK_SIZE
    ) -> EncryptedWriter:
        key_id = keys.current_key_id
        if len(key_id.encode()) > 16:
            raise ValueError("key ids are at most 16 bytes")
        header = Header(chunk_size, secrets.token_bytes(8), key_id)
        key = keys.key_for(key_id)
        handle = path.open("wb")
        handle.write(header.pack(key, context))
        return cls(handle, header, key, context, 0)

    @classmethod
    def resume(cls, path: Path, keys: KeyProvider, *, context: bytes = b"") -> EncryptedWriter:
        """Reopen an unfinished file after its last whole chunk (a torn chunk at the end is cut off)."""
        handle = path.open("r+b")
        try:
            header, key = read_header(handle, keys, context, complete=False)
            if header.plaintext_size is not None:
                raise ModelTampered("file is already finished")
            whole = (os.fstat(handle.fileno()).st_size - HEADER_SIZE) // (header.chunk_size + TAG_SIZE)
            handle.truncate(HEADER_SIZE + whole * (header.chunk_size + TAG_SIZE))
            handle.seek(0, os.SEEK_END)
        except BaseException:
            handle.close()
            raise
        return cls(handle, header, key, context, whole * header.chunk_size)

    @property
    def chunk_size(self) -> int:
        return self._header.chunk_size

    @property
    def received(self) -> int:
        """Plaintext bytes accepted so far (on disk or buffered)."""
        return self.committed + len(self._buffer)

    def committed_plaintext(self) -> Iterator[bytes]:
        """The plaintext already on disk, chunk by chunk, authenticated (to re-hash it after a restart)."""
        for index in range(self.committed // self.chunk_size):
            offset = HEADER_SIZE + index * (self.chunk_size + TAG_SIZE)
            self._handle.seek(offset)
            sealed = self._handle.read(self.chunk_size + TAG_SIZE)
            try:
                yield self._aead.decrypt(
                    _nonce(self._header.nonce_prefix, index), sealed, _chunk_aad(self._static, index, False)
                )
            except InvalidTag:
                raise ModelTampered(f"partial download chunk {index} fails authentication") from None
        self._handle.seek(0, os.SEEK_END)

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) > self.chunk_size:
            self._seal(bytes(self._buffer[: self.chunk_size]), final=False)
            del self._buffer[: self.chunk_size]

    def _seal(self, plaintext: bytes, *, final: bool) -> None:
        index = self.committed // self.chunk_size
        if index >= _MAX_CHUNKS:
            raise ValueError("file too large for this chunk size")
        nonce = _nonce(self._header.nonce_prefix, index)
        self._handle.write(self._aead.encrypt(nonce, plaintext, _chunk_aad(self._static, index, final)))
        # A crash may lose the buffer but never leaves a chunk half in Python's buffer and half on disk.
        self._handle.flush()
        self.committed += len(plaintext)

    def finish(self) -> int:
        """Write the final chunk and the authenticated header; return the plaintext size."""
        self._seal(bytes(self._buffer), final=True)
        self._buffer.clear()
        header = Header(self._header.chunk_size, self._header.nonce_prefix, self._header.key_id, self.committed)
        self._handle.seek(0)
        self._handle.write(header.pack(self._key, self._context))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self.committed

    def close(self) -> None:
        self._handle.close()


class EncryptedReader:
    """Random access to a finished file's plaintext; every chunk is authenticated before it is returned."""

    def __init__(self, path: Path, keys: KeyProvider, *, context: bytes = b"") -> None:
        self._handle = path.open("rb")
        try:
            self.header, key = read_header(self._handle, keys, context)
            actual = os.fstat(self._handle.fileno()).st_size
            if actual != self.header.file_size():
                problem = "truncated" if actual < self.header.file_size() else "has extra bytes"
                raise ModelTampered(f"model file {problem}: {actual} bytes, the header says {self.header.file_size()}")
        except BaseException:
            self._handle.close()
            raise
        self._aead = AESGCM(key)
        self._static = self.header.static() + _context_digest(context)

    @property
    def size(self) -> int:
        assert self.header.plaintext_size is not None
        return self.header.plaintext_size

    def chunk(self, index: int) -> bytes:
        count = self.header.chunk_count()
        if not 0 <= index < count:
            raise IndexError(index)
        size = self.header.chunk_size
        self._handle.seek(HEADER_SIZE + index * (size + TAG_SIZE))
        length = (size if index < count - 1 else self.size - index * size) + TAG_SIZE
        sealed = self._handle.read(length)
        aad = _chunk_aad(self._static, index, index == count - 1)
        try:
            return self._aead.decrypt(_nonce(self.header.nonce_prefix, index), sealed, aad)
        except InvalidTag:
            raise ModelTampered(f"model file chunk {index} of {count} fails authentication (edited or moved)") from None

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Plaintext bytes ``[start, end)``, decrypting only the chunks that overlap it."""
        end = self.size if end is None else end
        size = self.header.chunk_size
        index = start // size
        position = index * size
        while position < end:
            data = self.chunk(index)
            yield data[max(start - position, 0) : min(end - position, len(data))]
            position += len(data)
            index += 1

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> EncryptedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
