"""Router versions on disk: signed like model versions, one of them active, older ones kept for rollback.

``<data_dir>/routers/<version>.json`` is the artifact (routing/learned.py reads it), ``<version>.manifest.json`` its
manifest signed by the model signing key (modelstore/signing.py: the same key, the same canonical bytes, name
``router``), and ``ACTIVE`` names the version the engine loads. A version whose file no longer matches its signed
sha256 is refused, never half-used: the engine then routes by the rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from upcoach.config import Settings
from upcoach.experiments.assignment import Variant, assign
from upcoach.modelstore.signing import ManifestSigner, SignedManifest
from upcoach.routing.learned import LearnedRouter

log = logging.getLogger(__name__)

NAME = "router"
FOLDER = "routers"
ACTIVE = "ACTIVE"
AB_FILE = "AB.json"


class RouterTampered(ValueError):
    """The artifact does not match its signed manifest (or has none)."""


@dataclass(frozen=True)
class StoredRouter:
    version: str
    manifest: SignedManifest
    meta: dict[str, Any]
    active: bool


@dataclass(frozen=True)
class RouterAB:
    """An A/B between the active version (control) and a candidate: each user sticks to one arm, by the experiments
    framework's assignment (a hash of key and user id, experiments/assignment.py); anonymous requests get control.
    The arm shows in every record (``routing.router``), which is what ``upcoach router ab status`` compares."""

    key: str
    variants: tuple[Variant, ...]
    routers: dict[str, LearnedRouter]

    def pick(self, user_id: str | None) -> LearnedRouter:
        variant = self.variants[0] if user_id is None else assign(self.key, user_id, self.variants)
        return self.routers[str(variant.config["router"])]


class RouterStore:
    def __init__(self, folder: Path, signer: ManifestSigner) -> None:
        self.folder = folder
        self.signer = signer

    @classmethod
    def from_settings(cls, settings: Settings) -> RouterStore:
        return cls(settings.data_dir / FOLDER, ManifestSigner.from_settings(settings))

    def _artifact(self, version: str) -> Path:
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"invalid router version {version!r}")
        return self.folder / f"{version}.json"

    def _manifest(self, version: str) -> Path:
        return self.folder / f"{version}.manifest.json"

    def save(self, payload: dict[str, Any]) -> SignedManifest:
        """Write a new version (never overwrites one: versions are immutable) and sign it."""
        LearnedRouter(payload)  # refuse to store what the engine could not load
        version = payload["version"]
        path = self._artifact(version)
        if path.exists():
            raise FileExistsError(f"router version {version} exists")
        self.folder.mkdir(parents=True, exist_ok=True)
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        manifest = self.signer.sign(NAME, version, hashlib.sha256(raw).hexdigest(), len(raw))
        _write(path, raw)
        _write(self._manifest(version), json.dumps(asdict(manifest), indent=2).encode())
        return manifest

    def load(self, version: str) -> LearnedRouter:
        """The version's router, after checking the file against its signed manifest."""
        path = self._artifact(version)
        if not path.exists():
            raise FileNotFoundError(f"no router version {version}")
        manifest = self.manifest(version)
        raw = path.read_bytes()
        if (
            manifest.name != NAME
            or manifest.version != version
            or manifest.size != len(raw)
            or manifest.sha256 != hashlib.sha256(raw).hexdigest()
            or not self.signer.verify(manifest)
        ):
            raise RouterTampered(f"router version {version} does not match its signed manifest")
        return LearnedRouter(json.loads(raw))

    def manifest(self, version: str) -> SignedManifest:
        try:
            return SignedManifest(**json.loads(self._manifest(version).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise RouterTampered(f"router version {version} has no readable manifest") from exc

    def use(self, version: str) -> LearnedRouter:
        """Make ``version`` the active router (promotion and rollback alike), after verifying it."""
        router = self.load(version)
        _write(self.folder / ACTIVE, version.encode())
        return router

    def active_version(self) -> str | None:
        path = self.folder / ACTIVE
        return path.read_text().strip() or None if path.exists() else None

    def active(self) -> LearnedRouter | None:
        """The active router, or None (none chosen, or refused: the rules route then, and the log says why)."""
        version = self.active_version()
        if version is None:
            return None
        try:
            return self.load(version)
        except (OSError, ValueError) as exc:
            log.error("active router %s refused (%s): routing by the rules", version, exc)
            return None

    def start_ab(self, candidate: str, share: float) -> RouterAB:
        control = self.active_version()
        if control is None:
            raise ValueError("an A/B compares a candidate with the active router: run `upcoach router use` first")
        if control == candidate or not 0.0 < share < 1.0:
            raise ValueError("the candidate must differ from the active router and its share be in (0, 1)")
        self.load(candidate)
        spec = {"key": f"router-ab-{control}-{candidate}", "control": control, "candidate": candidate, "share": share}
        _write(self.folder / AB_FILE, json.dumps(spec).encode())
        ab = self.ab()
        assert ab is not None
        return ab

    def stop_ab(self) -> bool:
        path = self.folder / AB_FILE
        if not path.exists():
            return False
        path.unlink()
        return True

    def ab_spec(self) -> dict[str, Any] | None:
        path = self.folder / AB_FILE
        return json.loads(path.read_text()) if path.exists() else None

    def ab(self) -> RouterAB | None:
        """The running A/B, or None (none, or an arm refused: the active router alone then, and the log says why)."""
        spec = self.ab_spec()
        if spec is None:
            return None
        try:
            routers = {version: self.load(version) for version in (spec["control"], spec["candidate"])}
        except (OSError, ValueError) as exc:
            log.error("router A/B %s refused (%s): the active router alone routes", spec.get("key"), exc)
            return None
        share = float(spec["share"])
        variants = (
            Variant("control", 1.0 - share, {"router": spec["control"]}),
            Variant("candidate", share, {"router": spec["candidate"]}),
        )
        return RouterAB(spec["key"], variants, routers)

    def list(self) -> list[StoredRouter]:
        if not self.folder.exists():
            return []
        active = self.active_version()
        rows = []
        for path in sorted(self.folder.glob("*.manifest.json")):
            version = path.name.removesuffix(".manifest.json")
            try:
                meta = json.loads(self._artifact(version).read_text()).get("meta", {})
                rows.append(StoredRouter(version, self.manifest(version), meta, version == active))
            except (OSError, ValueError):
                continue
        return sorted(rows, key=lambda r: str(r.meta.get("created_at", "")))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_active(settings: Settings) -> LearnedRouter | None:
    """The engine's router at start: None (the rules) unless ``upcoach router use`` chose a version."""
    if not (settings.data_dir / FOLDER / ACTIVE).exists():
        return None
    return RouterStore.from_settings(settings).active()


def load_ab(settings: Settings) -> RouterAB | None:
    """The engine's router A/B at start, if ``upcoach router ab start`` began one."""
    if not (settings.data_dir / FOLDER / AB_FILE).exists():
        return None
    return RouterStore.from_settings(settings).ab()
