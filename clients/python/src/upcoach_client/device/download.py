"""Getting the on-device model: which one (``GET /api/ai/models/recommend``), the signed manifest, and the GGUF
itself with ranged requests that resume after a cut, verified before it is ever loaded.

Order of trust: the manifest's Ed25519 signature is checked with the pinned public key first (a manifest the server
did not sign is refused), then the file's size and sha256 against the signed manifest. The partial file keeps what
arrived; the next call resumes with ``Range`` and ``If-Range`` on the sha256 ETag, so a changed file on the server
restarts the download instead of splicing two versions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from upcoach_client.client import Client
from upcoach_client.errors import ConnectionFailed, InvalidRequest, VerificationFailed
from upcoach_client.models import Manifest

CHUNK = 1 << 20


def canonical_manifest(manifest: Manifest) -> bytes:
    """The bytes the server signed: ``{name, version, sha256, size}``, keys sorted, no whitespace, UTF-8."""
    fields = {"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256, "size": manifest.size}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_manifest(manifest: Manifest, public_key: bytes) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            base64.b64decode(manifest.signature), canonical_manifest(manifest)
        )
    except (InvalidSignature, ValueError) as exc:
        raise VerificationFailed(f"manifest of {manifest.name}@{manifest.version}: bad signature, refused") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, manifest: Manifest, public_key: bytes) -> None:
    """Refuse a model file that is not exactly the one the signed manifest names (also run before every load)."""
    verify_manifest(manifest, public_key)
    size = path.stat().st_size
    if size != manifest.size:
        raise VerificationFailed(f"{path.name}: {size} bytes, the signed manifest says {manifest.size}: refused")
    if sha256_of(path) != manifest.sha256:
        raise VerificationFailed(f"{path.name}: sha256 differs from the signed manifest: refused")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    manifest: Manifest
    resumed_from: int  # bytes already on the phone when this call started
    fetched: int  # bytes this call downloaded


def download_model(client: Client, model_id: str, folder: Path, public_key: bytes) -> Downloaded:
    """Download (or resume) ``model_id``'s artifact into ``folder`` and verify it. A cut raises ConnectionFailed
    and keeps the partial file: call again to resume. A file that fails verification is deleted and refused."""
    manifest = client.manifest(model_id)
    verify_manifest(manifest, public_key)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{manifest.name}-{manifest.version}.gguf"
    if final.exists():
        verify_file(final, manifest, public_key)
        return Downloaded(final, manifest, final.stat().st_size, 0)
    part = final.with_suffix(".gguf.part")
    start = part.stat().st_size if part.exists() else 0
    if start > manifest.size:
        part.unlink()
        start = 0
    fetched = 0
    if start < manifest.size:
        headers = {"If-Range": f'"{manifest.sha256}"', "Range": f"bytes={start}-"} if start else {}
        try:
            response = client.download(f"/api/ai/models/{model_id}/artifact", headers)
        except InvalidRequest as exc:  # 416: what we hold is not a prefix of this file
            part.unlink(missing_ok=True)
            raise VerificationFailed(f"{part.name}: the partial file does not fit the server's, removed") from exc
        try:
            mode = "ab" if response.status_code == 206 else "wb"
            start = start if response.status_code == 206 else 0
            with part.open(mode) as handle:
                for block in response.iter_bytes(CHUNK):
                    handle.write(block)
                    fetched += len(block)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"download of {model_id} cut after {start + fetched} bytes: call again") from exc
        finally:
            response.close()
    try:
        verify_file(part, manifest, public_key)
    except VerificationFailed:
        part.unlink(missing_ok=True)
        raise
    part.rename(final)
    return Downloaded(final, manifest, start, fetched)
