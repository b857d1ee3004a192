"""Signed manifests: a phone verifies them with nothing but the public key and the canonical JSON."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from upcoach.config import Settings
from upcoach.modelstore.signing import KEY_FILE, ManifestSigner, canonical_manifest, parse_signing_key

SHA = "ab" * 32


def verify(public_raw: bytes, manifest: dict[str, object]) -> None:
    message = canonical_manifest(manifest["name"], manifest["version"], manifest["sha256"], manifest["size"])  # type: ignore[arg-type]
    Ed25519PublicKey.from_public_bytes(public_raw).verify(base64.b64decode(manifest["signature"]), message)  # type: ignore[arg-type]


def test_generated_key_is_private_stable_and_verifies(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    signer = ManifestSigner.from_settings(settings)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    again = ManifestSigner.from_settings(settings)
    assert again.public_raw == signer.public_raw and again.key_id == signer.key_id
    signed = signer.sign("qwen", "2", SHA, 123)
    manifest = {"name": "qwen", "version": "2", "sha256": SHA, "size": 123, "signature": signed.signature}
    verify(signer.public_raw, manifest)
    for field, value in (("size", 124), ("sha256", "cd" * 32), ("version", "3"), ("name", "gemma")):
        with pytest.raises(InvalidSignature):
            verify(signer.public_raw, {**manifest, field: value})


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_manifest("n", "1", SHA, 5) == f'{{"name":"n","sha256":"{SHA}","size":5,"version":"1"}}'.encode()


def test_key_from_the_environment_in_every_format(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())  # fmt: skip
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()  # fmt: skip
    expected = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for value in (seed.hex(), base64.b64encode(seed).decode(), pem):
        signer = ManifestSigner.from_settings(Settings(data_dir=tmp_path, model_signing_key=value))
        assert signer.public_raw == expected
    assert not (tmp_path / KEY_FILE).exists()  # a configured key never creates a file
    for bad in ("not a key!", "00" * 31):
        with pytest.raises(ValueError):
            parse_signing_key(bad)
