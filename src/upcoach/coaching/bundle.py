"""The signed, versioned strategies bundle the app downloads for its offline mode.

Bundle: ``{"format": 1, "version", "createdAt", "keyId", "full": true, "strategies": [...]}`` or, since a version
the app already holds, ``{..., "full": false, "since", "changes": {"added", "updated", "removed"}}``. An unknown
``since`` gets the full bundle with ``"sinceUnknown": true``. ``signature`` is Ed25519 over the canonical JSON
(sorted keys, no whitespace, UTF-8) of the bundle without the ``signature`` field, base64-encoded; the app
verifies it with the public key from ``GET /api/coach/strategies/signing-key`` (pinned at install time).

The bundle's bytes depend only on (content version, since, key), so its ETag is a hash of the bytes and
identical on every worker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from upcoach.coaching.library import canonical_json
from upcoach.coaching.strategies import Published, StrategyRepository
from upcoach.security.keyfiles import create_key_file, parse_ed25519_key

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
KEY_FILE = "bundle-signing.key"


class SigningKeyError(ValueError):
    pass


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.public_raw).hexdigest()[:16]

    def public_json(self) -> dict[str, str]:
        pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "keyId": self.key_id,
            "algorithm": "Ed25519",
            "publicKey": base64.b64encode(self.public_raw).decode(),
            "publicKeyPem": pem.decode(),
        }

    def sign(self, payload: bytes) -> str:
        return base64.b64encode(self.private.sign(payload)).decode()


def parse_signing_key(value: str) -> SigningKey:
    """A PEM private key, or the 32-byte Ed25519 seed in hex or base64."""
    try:
        return SigningKey(parse_ed25519_key(value, name="UPCOACH_BUNDLE_SIGNING_KEY"))
    except ValueError as exc:
        raise SigningKeyError(str(exc)) from exc


def load_or_create_signing_key(configured: str | None, data_dir: Path) -> SigningKey:
    """The configured key, else ``<data_dir>/bundle-signing.key`` (created on first use, mode 0600)."""
    if configured:
        return parse_signing_key(configured)
    path = data_dir / KEY_FILE
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # If another worker created the key meanwhile, theirs wins and is the one read below.
        create_key_file(path, pem.decode())
        log.info("generated the strategies bundle signing key at %s", path)
    return parse_signing_key(path.read_text())


def verify(bundle: dict[str, object], public_key: bytes) -> bool:
    """What the app does: check the signature over the canonical JSON of everything but ``signature``."""
    signature = bundle.get("signature")
    if not isinstance(signature, str):
        return False
    unsigned = {key: value for key, value in bundle.items() if key != "signature"}
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(signature), canonical_json(unsigned))
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class BuiltBundle:
    body: bytes
    etag: str
    version: str


class BundleBuilder:
    def __init__(self, repository: StrategyRepository, key: SigningKey) -> None:
        self.repository = repository
        self.key = key
        self._cache: dict[tuple[str, str | None], BuiltBundle] = {}

    async def build(self, since: str | None = None) -> BuiltBundle:
        current = self.repository.current
        if current is None:
            raise RuntimeError("the strategies library has not been published yet")
        cached = self._cache.get((current.version, since))
        if cached is not None:
            return cached
        bundle = await self._bundle(current, since)
        bundle["signature"] = self.key.sign(canonical_json(bundle))
        body = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        built = BuiltBundle(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"', current.version)
        if len(self._cache) > 64:  # one entry per version the apps in the field still hold: small
            self._cache.clear()
        self._cache[(current.version, since)] = built
        return built

    async def _bundle(self, current: Published, since: str | None) -> dict[str, object]:
        head: dict[str, object] = {
            "format": BUNDLE_FORMAT,
            "version": current.version,
            "createdAt": current.created_at.isoformat().replace("+00:00", "Z"),
            "keyId": self.key.key_id,
        }
        previous = await self.repository.manifest(since) if since else None
        if previous is None:
            strategies = await self.repository.get_many()
            extra = {"sinceUnknown": True, "since": since} if since else {}
            return {**head, "full": True, **extra, "strategies": [s.to_json() for s in strategies]}
        old, new = previous.manifest, current.manifest
        added = sorted(sid for sid in new if sid not in old)
        updated = sorted(sid for sid in new if sid in old and old[sid] != new[sid])
        removed = sorted(sid for sid in old if sid not in new)
        by_id = {s.id: s.to_json() for s in await self.repository.get_many([*added, *updated])}
        return {
            **head,
            "full": False,
            "since": since,
            "changes": {
                "added": [by_id[sid] for sid in added if sid in by_id],
                "updated": [by_id[sid] for sid in updated if sid in by_id],
                "removed": removed,
            },
        }
