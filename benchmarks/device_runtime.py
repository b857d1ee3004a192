"""The phone's side, with the client SDK on this machine: verifying the downloaded model against its signed manifest
(Ed25519 + sha256), loading it with llama-cpp-python (the plan's gate: under 30 s on a phone), and the first token
of a local answer.

Run: ``.venv/bin/python benchmarks/device_runtime.py`` (prints the section for docs/benchmarks.md). A server-class
core is not a phone: the figures show the SDK's own overhead (verification) next to llama.cpp's load, not a
phone's load time.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from benchmarks.common import machine, median  # noqa: E402
from upcoach.config import Settings  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402
from upcoach.modelstore.signing import ManifestSigner  # noqa: E402
from upcoach_client.device import LocalModel, verify_file  # noqa: E402
from upcoach_client.models import Manifest  # noqa: E402

RUNS = 3
THREADS = 2
QUESTION = [{"role": "user", "content": "I can't fall asleep before exams. What can I do tonight?"}]


def section(command: str) -> str:
    entry = get_entry(DEFAULT_MODEL)
    path = fetch(entry, Settings().models_dir)
    signer = ManifestSigner(Ed25519PrivateKey.generate())
    signed = signer.sign(entry.name, "1", entry.sha256, path.stat().st_size)
    manifest = Manifest(signed.name, signed.version, signed.sha256, signed.size, signed.signature, signed.key_id)
    path.read_bytes()  # warm page cache: the figures are hashing and loading, not the disk
    verify, load, first = [], [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        verify_file(path, manifest, signer.public_raw)
        verify.append(time.perf_counter() - started)
        model = LocalModel.load(path, manifest, signer.public_raw, threads=THREADS)
        load.append(model.load_seconds)
        started = time.perf_counter()
        next(iter(model.stream(QUESTION, max_tokens=8)))
        first.append(time.perf_counter() - started)
        model.close()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    size_mb = path.stat().st_size / 1e6
    return "\n".join(
        [
            "## On-device runtime (client SDK): verify, load, first token",
            "",
            f"- command: `{command}` (benchmarks/device_runtime.py); date: {when}",
            f"- machine: {machine()}",
            f"- model: {entry.name} ({size_mb:.0f} MB), {THREADS} threads, median of {RUNS}, file in a warm page cache",
            "",
            "| step | median s | runs (s) |",
            "|---|---:|---|",
            f"| verify: Ed25519 manifest + sha256 of the file | {median(verify):.2f} | {_runs(verify)} |",
            f"| load (LocalModel.load_seconds; gate 30 s) | {median(load):.2f} | {_runs(load)} |",
            f"| first token of a local answer | {median(first):.2f} | {_runs(first)} |",
            "",
        ]
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


if __name__ == "__main__":
    print(section(".venv/bin/python benchmarks/device_runtime.py"))
