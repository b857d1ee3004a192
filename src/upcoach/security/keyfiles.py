"""The service's own keys: decoding a configured value, and creating a missing key file without races.

Five keys follow one pattern (the audit chain's HMAC key, the model encryption key, the model-manifest and
strategies-bundle signing keys, the journal master key): an environment variable, else a file in the data folder
created on first use with mode 0600. A Vault or KMS provider replaces the file, not the decoding.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ED25519_SEED_BYTES = 32


def decode_key(value: str, *, name: str, size: int | None = None, minimum: int | None = None) -> bytes:
    """Hex first (so a hex key is never misread as base64), then standard or URL-safe base64, padded or not.

    ``size``: the exact length the key must have (AES-256: 32, nothing is stretched); ``minimum``: a lower bound.
    """
    value = value.strip()
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
        key = bytes.fromhex(value)
    else:
        try:
            normalised = value.replace("-", "+").replace("_", "/")
            key = base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{name} is neither hex nor base64") from exc
    if size is not None and len(key) != size:
        raise ValueError(f"{name} has {len(key)} bytes, exactly {size} are needed")
    if minimum is not None and len(key) < minimum:
        raise ValueError(f"{name} has {len(key)} bytes, at least {minimum} are needed")
    return key


def parse_ed25519_key(value: str, *, name: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 private key, or the 32-byte seed as hex or base64."""
    value = value.strip()
    if value.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(value.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} is not a readable PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{name} is a PEM key but not an Ed25519 one")
        return key
    return Ed25519PrivateKey.from_private_bytes(decode_key(value, name=name, size=ED25519_SEED_BYTES))


def create_key_file(path: Path, content: str | None = None) -> None:
    """Write a new key (default: 32 random bytes as hex) to ``path``, mode 0600, unless another process got
    there first.

    The key is written to a private temporary file and then hard-linked into place: the link either wins or
    fails with FileExistsError, so a concurrent reader never sees a half-written key and nobody overwrites one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content if content is not None else secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
