"""Ed25519-signed model manifests: how a phone knows the GGUF it downloaded is the one this server vouches for.

The signature covers the canonical JSON of ``{name, version, sha256, size}`` (keys sorted, no whitespace, UTF-8),
so the app verifies it with any Ed25519 library: rebuild those bytes from the manifest, check the signature with
the public key from ``GET /api/ai/models/signing-key`` (pinned in the app), then compare the file's sha256.
The private key comes from ``UPCOACH_MODEL_SIGNING_KEY`` or ``<data_dir>/model_signing.key`` (created 0600).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from upcoach.config import Settings
from upcoach.security.keyfiles import create_key_file, parse_ed25519_key

log = logging.getLogger(__name__)

KEY_FILE = "model_signing.key"
ALGORITHM = "Ed25519"


def canonical_manifest(name: str, version: str, sha256: str, size: int) -> bytes:
    fields = {"name": name, "version": version, "sha256": sha256, "size": size}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_signing_key(value: str) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) Ed25519 key, or the 32-byte seed as hex or base64."""
    return parse_ed25519_key(value, name="model signing key")


@dataclass(frozen=True)
class SignedManifest:
    name: str
    version: str
    sha256: str
    size: int
    signature: str  # base64 of the 64-byte Ed25519 signature
    key_id: str


class ManifestSigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_raw = self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        # Names the key so the app can hold several (rotation) and pick the right one.
        self.key_id = hashlib.sha256(self.public_raw).hexdigest()[:16]

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestSigner:
        if settings.model_signing_key is not None:
            return cls(parse_signing_key(settings.model_signing_key.get_secret_value()))
        path = settings.data_dir / KEY_FILE
        if not path.exists():
            create_key_file(path)
            log.info("generated the model signing key %s", path)
        return cls(parse_signing_key(path.read_text()))

    def sign(self, name: str, version: str, sha256: str, size: int) -> SignedManifest:
        signature = self._key.sign(canonical_manifest(name, version, sha256, size))
        return SignedManifest(name, version, sha256, size, base64.b64encode(signature).decode(), self.key_id)

    def verify(self, manifest: SignedManifest) -> bool:
        """Whether ``manifest`` carries this key's valid signature over its fields."""
        if manifest.key_id != self.key_id:
            return False
        try:
            signature = base64.b64decode(manifest.signature, validate=True)
            self.public_key.verify(
                signature, canonical_manifest(manifest.name, manifest.version, manifest.sha256, manifest.size)
            )
        except (ValueError, InvalidSignature):
            return False
        return True

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
