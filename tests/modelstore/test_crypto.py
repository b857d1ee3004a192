"""Chunked AES-256-GCM model files: round trips, random access, and every way of tampering we can think of."""

from __future__ import annotations

import logging
import secrets
import stat
from pathlib import Path

import pytest

from upcoach.config import Settings
from upcoach.errors import ModelKeyUnavailable, ModelTampered
from upcoach.modelstore.crypto import (
    HEADER_SIZE,
    TAG_SIZE,
    EncryptedReader,
    EncryptedWriter,
    EnvKeyProvider,
    FileKeyProvider,
    StaticKeyProvider,
    model_key_provider,
    parse_model_key,
)

CHUNK = 1024
KEYS = StaticKeyProvider(secrets.token_bytes(32))


def encrypt(path: Path, data: bytes, *, context: bytes = b"m@1", pieces: int = 7) -> None:
    writer = EncryptedWriter.create(path, KEYS, context=context, chunk_size=CHUNK)
    step = max(1, len(data) // pieces)
    for offset in range(0, len(data), step):
        writer.write(data[offset : offset + step])
    assert writer.finish() == len(data)


def decrypt(path: Path, *, context: bytes = b"m@1", keys: StaticKeyProvider = KEYS) -> bytes:
    with EncryptedReader(path, keys, context=context) as reader:
        return b"".join(reader.iter_range())


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK, 5 * CHUNK + 17])
def test_round_trip_at_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = secrets.token_bytes(size)
    path = tmp_path / "m.ucm"
    encrypt(path, data)
    # A short plaintext can occur in random ciphertext by chance; from 16 bytes on it would mean no encryption.
    assert size < 16 or data[:64] not in path.read_bytes()
    assert path.stat().st_size == HEADER_SIZE + max(1, -(-size // CHUNK)) * TAG_SIZE + size
    assert decrypt(path) == data


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 5), (1000, 1030), (1024, 2048), (3000, 5137), (0, 5137)])
def test_ranges_decrypt_only_what_they_cover(tmp_path: Path, start: int, end: int) -> None:
    data = secrets.token_bytes(5 * CHUNK + 17)
    path = tmp_path / "m.ucm"
    encrypt(path, data)
    with EncryptedReader(path, KEYS, context=b"m@1") as reader:
        assert b"".join(reader.iter_range(start, end)) == data[start:end]


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[Path, bytes]:
    data = secrets.token_bytes(4 * CHUNK + 100)
    path = tmp_path / "m.ucm"
    encrypt(path, data)
    return path, data


def _chunk_offset(index: int) -> int:
    return HEADER_SIZE + index * (CHUNK + TAG_SIZE)


def test_a_flipped_bit_in_any_chunk_is_refused(sealed: tuple[Path, bytes]) -> None:
    path, _ = sealed
    raw = bytearray(path.read_bytes())
    raw[_chunk_offset(2) + 10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelTampered, match="chunk 2"):
        decrypt(path)


def test_truncation_is_refused_at_open(sealed: tuple[Path, bytes]) -> None:
    path, _ = sealed
    raw = path.read_bytes()
    for cut in (len(raw) - 1, _chunk_offset(3), HEADER_SIZE, 10):
        path.write_bytes(raw[:cut])
        with pytest.raises(ModelTampered, match="truncated"):
            decrypt(path)


def test_appended_bytes_are_refused(sealed: tuple[Path, bytes]) -> None:
    path, _ = sealed
    path.write_bytes(path.read_bytes() + b"\0" * 50)
    with pytest.raises(ModelTampered, match="extra bytes"):
        decrypt(path)


def test_reordered_chunks_are_refused(sealed: tuple[Path, bytes]) -> None:
    path, _ = sealed
    raw = path.read_bytes()
    one, two = raw[_chunk_offset(0) : _chunk_offset(1)], raw[_chunk_offset(1) : _chunk_offset(2)]
    path.write_bytes(raw[:HEADER_SIZE] + two + one + raw[_chunk_offset(2) :])
    with pytest.raises(ModelTampered, match="chunk 0"):
        decrypt(path)


def test_a_shortened_file_with_a_rewritten_size_is_refused(sealed: tuple[Path, bytes]) -> None:
    """Cutting whole chunks and editing the size field to match still fails: the header has its own tag, and
    the new last chunk was never sealed as final."""
    path, _ = sealed
    raw = bytearray(path.read_bytes())
    raw[38:46] = (2 * CHUNK).to_bytes(8, "big")
    path.write_bytes(bytes(raw[: _chunk_offset(3)]))
    with pytest.raises(ModelTampered, match="header fails authentication"):
        decrypt(path)


def test_another_models_file_or_key_is_refused(sealed: tuple[Path, bytes]) -> None:
    path, data = sealed
    with pytest.raises(ModelTampered, match="another model"):
        decrypt(path, context=b"other@1")
    with pytest.raises(ModelKeyUnavailable, match="encrypted with key"):
        decrypt(path, keys=StaticKeyProvider(secrets.token_bytes(32)))
    assert decrypt(path) == data


def test_an_unfinished_file_is_refused_and_resumes_after_its_last_whole_chunk(tmp_path: Path) -> None:
    data = secrets.token_bytes(3 * CHUNK + 300)
    path = tmp_path / "m.ucm.part"
    writer = EncryptedWriter.create(path, KEYS, context=b"m@1", chunk_size=CHUNK)
    writer.write(data[: 2 * CHUNK + 500])
    writer.close()  # a crash: chunk 0 and 1 are on disk, the rest was in memory
    with pytest.raises(ModelTampered, match="never finished"):
        decrypt(path)
    with path.open("ab") as handle:
        handle.write(b"torn half chunk")
    resumed = EncryptedWriter.resume(path, KEYS, context=b"m@1")
    assert resumed.committed == 2 * CHUNK
    assert b"".join(resumed.committed_plaintext()) == data[: 2 * CHUNK]
    resumed.write(data[2 * CHUNK :])
    resumed.finish()
    assert decrypt(path) == data


def test_model_keys_parse_hex_and_base64_and_refuse_the_rest() -> None:
    key = secrets.token_bytes(32)
    import base64

    assert parse_model_key(key.hex()) == key
    assert parse_model_key(base64.b64encode(key).decode()) == key
    assert parse_model_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    for bad in ("", "abc", key.hex()[:-2], base64.b64encode(key[:16]).decode(), "z" * 64):
        with pytest.raises(ValueError, match="UPCOACH_MODEL_KEY"):
            parse_model_key(bad)
    with pytest.raises(ValueError, match="UPCOACH_MODEL_KEY"):
        model_key_provider(Settings(model_key="not a key", _env_file=None))  # type: ignore[call-arg]
    assert isinstance(model_key_provider(Settings(model_key=key.hex(), _env_file=None)), EnvKeyProvider)  # type: ignore[call-arg]


def test_without_a_configured_key_one_is_generated_lazily_with_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = model_key_provider(Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]
    assert isinstance(provider, FileKeyProvider)
    assert not (tmp_path / "model.key").exists()
    with caplog.at_level(logging.WARNING):
        key_id = provider.current_key_id
    assert "generated the model encryption key" in caplog.text
    assert stat.S_IMODE((tmp_path / "model.key").stat().st_mode) == 0o600
    again = model_key_provider(Settings(data_dir=tmp_path, _env_file=None))  # type: ignore[call-arg]
    assert again.current_key_id == key_id
    assert len(again.key_for(key_id)) == 32
