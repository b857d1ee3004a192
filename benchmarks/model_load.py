"""Model load time: the plaintext GGUF file vs the encrypted store decrypted into an in-memory file (memfd).

Run: ``.venv/bin/python benchmarks/model_load.py`` (prints the section), or ``benchmarks/run.py --only modelload``
(``make bench``), which writes it into docs/benchmarks.md. Both paths read their file from a warm page cache (each is
read once before timing), so the difference is the cost of decryption, authentication and the sha256 check,
not disk speed. Each load is timed from nothing to a model ready to generate, median of 3.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, median  # noqa: E402
from upcoach.config import Settings, physical_cores  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.crypto import StaticKeyProvider  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402
from upcoach.modelstore.registry import ModelRegistry  # noqa: E402
from upcoach.modelstore.store import ModelStore  # noqa: E402
from upcoach.storage.database import Database  # noqa: E402

RUNS = 3
CONTEXT = 2048
HEADING = "## Model load:"


def load(path: Path, threads: int) -> float:
    from llama_cpp import Llama

    started = time.perf_counter()
    llama = Llama(model_path=str(path), n_ctx=CONTEXT, n_threads=threads, verbose=False)
    elapsed = time.perf_counter() - started
    del llama
    gc.collect()
    return elapsed


def warm(path: Path) -> None:
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


async def measure() -> dict[str, object]:
    entry = get_entry(DEFAULT_MODEL)
    plain = fetch(entry, Settings().models_dir)
    threads = physical_cores()
    with tempfile.TemporaryDirectory(prefix="upcoach-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        db = Database(settings.effective_database_url)
        await db.migrate()
        store = ModelStore(settings, ModelRegistry(db), StaticKeyProvider(secrets.token_bytes(32)))
        started = time.perf_counter()
        version = await store.import_file(plain, entry.name, entry.version, entry.sha256)
        encrypt_s = time.perf_counter() - started
        warm(plain)
        warm(Path(version.path))

        plaintext = [load(plain, threads) for _ in range(RUNS)]
        decrypt: list[float] = []
        total: list[float] = []
        for _ in range(RUNS):
            started = time.perf_counter()
            async with store.open_plaintext(version.id) as path:
                decrypted = time.perf_counter() - started
                llama_s = await asyncio.to_thread(load, path, threads)
            decrypt.append(decrypted)
            total.append(decrypted + llama_s)
        await db.dispose()

    return {
        "model": entry.name, "size_mb": entry.size / 1e6, "threads": threads, "encrypt_s": encrypt_s,
        "plaintext": plaintext, "decrypt": decrypt, "total": total,
    }  # fmt: skip


def section(command: str) -> str:
    """The docs/benchmarks.md section: load time of the plaintext file against decrypting into memfd."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    r = asyncio.run(measure())
    plaintext, decrypt, total = r["plaintext"], r["decrypt"], r["total"]
    size_mb, encrypt_s = float(r["size_mb"]), float(r["encrypt_s"])  # type: ignore[arg-type]
    return "\n".join(
        [
            f"{HEADING} the plaintext GGUF against the encrypted store decrypted into memory (memfd)",
            "",
            f"- command: `{command}` (benchmarks/model_load.py); date: {when}",
            f"- machine: {machine()}",
            f"- model: {r['model']} ({size_mb:.0f} MB), {r['threads']} threads, median of {RUNS}, both files in a "
            "warm page cache: the difference is decryption, authentication (AES-256-GCM, 1 MiB chunks) and the "
            "sha256 re-check",
            "",
            "| load path | median s | runs (s) |",
            "|---|---:|---|",
            f"| plaintext GGUF file (llama.cpp mmap) | {median(plaintext):.2f} | {_runs(plaintext)} |",  # type: ignore[arg-type]
            f"| encrypted store -> memfd: decrypt + authenticate + sha256 | {median(decrypt):.2f} | {_runs(decrypt)} |",  # type: ignore[arg-type]
            f"| encrypted store -> memfd: total to a loaded model | {median(total):.2f} | {_runs(total)} |",  # type: ignore[arg-type]
            "",
            f"One-time encryption at import or download (sha256 + AES-256-GCM): {encrypt_s:.2f} s "
            f"({size_mb / encrypt_s:.0f} MB/s).",
            "",
        ]
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    print(section(".venv/bin/python benchmarks/model_load.py"))
