"""`make soak`: the mixed load of the fault suite (tests/faults/harness.py) on a live `upcoach serve` with the real
model for SOAK_S seconds (default 1800), sampling every 10 s the server's RSS (children included), open files,
database connections, queue depths and the answers so far. Fails on unbounded growth (RSS after the warm-up grows
more than 10 %) or on any error that is not a deliberate 429/503. Writes the soak section of docs/reliability.md
and its plot, docs/reliability-soak.png.

The database is a throwaway one on the machine's PostgreSQL (its connections are counted in pg_stat_activity); the
cloud is a FaultServer answering at once, so the local model's share is what the soak exercises for leaks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import data_dir_with_model, free_port, spawn  # noqa: E402
from tests.fakes.fault_server import FaultServer  # noqa: E402
from tests.faults.harness import Load, Tally, audit_chain_intact, missing_records  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from upcoach.config import Settings  # noqa: E402
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry  # noqa: E402
from upcoach.modelstore.fetch import fetch  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
PLOT = ROOT / "docs" / "reliability-soak.png"
START, END = "<!-- soak:start -->", "<!-- soak:end -->"
SAMPLE_SECONDS = 10.0
RSS_GROWTH_LIMIT = 0.10
POSTGRES_ADMIN_URL = os.environ.get("UPCOACH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
METRICS = ("upcoach_records_pending", "upcoach_records_spooled", "upcoach_local_queue_depth")


@dataclass
class Sample:
    t: float
    rss_mb: float
    open_files: int
    db_connections: int
    records_pending: float
    records_spooled: float
    queue_depth: float
    sent: int
    ok: int
    other: int


def _psql(sql: str, database: str = "test") -> str:
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    return subprocess.run(["psql", url, "-Atc", sql], capture_output=True, text=True, check=True).stdout.strip()


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _metrics(base_url: str) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    found = {}
    for name in METRICS:
        match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
        found[name] = float(match.group(1)) if match else 0.0
    return found


def sample(pid: int, base_url: str, database: str, started: float, tally: Tally) -> Sample:
    processes = _tree(pid)
    rss = sum(p.memory_info().rss for p in processes) / 2**20
    files = sum(p.num_fds() for p in processes)
    connections = int(_psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'"))
    figures = _metrics(base_url)
    return Sample(time.monotonic() - started, rss, files, connections, figures["upcoach_records_pending"],
                  figures["upcoach_records_spooled"], figures["upcoach_local_queue_depth"], tally.sent, tally.ok,
                  tally.other)  # fmt: skip


async def soak(seconds: float, base_url: str, pid: int, database: str, concurrency: int) -> tuple[Tally, list]:
    tally = Tally("soak")
    samples: list[Sample] = []
    started = time.monotonic()
    # Generous per-request time and short answers: a shared CPU answers slowly, and a slow answer is not an error.
    async with Load(base_url, tally, concurrency=concurrency, timeout=600, max_tokens=32, settle=60):
        while time.monotonic() - started < seconds:
            samples.append(await asyncio.to_thread(sample, pid, base_url, database, started, tally))
            print(samples[-1], flush=True)
            await asyncio.sleep(SAMPLE_SECONDS)
    samples.append(await asyncio.to_thread(sample, pid, base_url, database, started, tally))
    return tally, samples


def growth_after_warmup(samples: list[Sample]) -> tuple[float, float, float]:
    """RSS at the end of the warm-up (a fifth of the run, at least the first minute), at the end, and the growth."""
    warm_until = max(60.0, samples[-1].t / 5)
    warm = next((s for s in samples if s.t >= warm_until), samples[-1])
    return warm.rss_mb, samples[-1].rss_mb, samples[-1].rss_mb / warm.rss_mb - 1


def plot(samples: list[Sample]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t / 60 for s in samples]
    figure, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    series = [
        ("RSS (MB, server and engine)", [s.rss_mb for s in samples]),
        ("open files", [s.open_files for s in samples]),
        ("database connections", [s.db_connections for s in samples]),
        ("queue depth / records pending", [s.queue_depth + s.records_pending for s in samples]),
    ]
    for axis, (title, values) in zip(axes.flat, series, strict=True):
        axis.plot(minutes, values)
        axis.set_title(title)
        axis.set_xlabel("minutes")
        axis.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=80)


def section(seconds: float, tally: Tally, samples: list[Sample], verdict: str, missing: int, audit_ok: bool) -> str:
    warm, last, grown = growth_after_warmup(samples)
    every = max(1, len(samples) // 20)
    rows = [f"| {s.t / 60:.1f} | {s.rss_mb:.0f} | {s.open_files} | {s.db_connections} | {s.queue_depth:.0f} | "
            f"{s.records_pending:.0f} | {s.sent} | {s.ok} | {s.other} |" for s in samples[::every]]  # fmt: skip
    short = " (a SHORT run, not the default 30 min)" if seconds < 1800 else ""
    return "\n".join([
        START,
        f"## Soak: {seconds / 60:.0f} min{short}",
        "",
        f"Command: `make soak SOAK_S={seconds:.0f}` on {machine()}, {dt.date.today().isoformat()}. Real model, mixed "
        "load (chats local and cloud, streamed and not, journal posts, settings changes); machine load average at "
        f"the end: {os.getloadavg()[1]:.1f} (5 min).",
        "",
        f"**{verdict}**: RSS {warm:.0f} MB after warm-up, {last:.0f} MB at the end ({grown * 100:+.1f} %, limit "
        f"+{RSS_GROWTH_LIMIT * 100:.0f} %); {tally.sent} requests, {tally.ok} answered 2xx, {tally.deliberate} "
        f"deliberate 429/503, {tally.other} other errors ({tally.unfinished} still running at the end, given up "
        f"after a minute); answered requests without a record: {missing}; audit chain "
        f"verified: {'yes' if audit_ok else 'no'}.",
        "",
        "| minute | RSS MB | open files | DB connections | queue depth | records pending | sent | 2xx | other errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"![soak]({PLOT.name})",
        END,
    ])  # fmt: skip


def write_doc(text: str) -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Reliability\n\n"
    if START in current:
        before, _, rest = current.partition(START)
        current = before + text + rest.partition(END)[2]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(current, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_S", "1800")))
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    model = fetch(get_entry(DEFAULT_MODEL), Settings().models_dir)
    database = f"upcoach_soak_{secrets.token_hex(4)}"
    _psql(f'CREATE DATABASE "{database}"')
    tmp = Path(tempfile.mkdtemp(prefix="upcoach-soak-"))
    data_dir = data_dir_with_model(tmp, model)
    port = free_port()
    try:
        with FaultServer() as cloud:
            env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir), "UPCOACH_HOST": "127.0.0.1",
                   "UPCOACH_PORT": str(port), "UPCOACH_AUTH": "off", "UPCOACH_CLOUD_BASE_URL": cloud.url,
                   "UPCOACH_CLOUD_API_KEY": "k", "UPCOACH_CLOUD_MODEL": "ok",
                   "UPCOACH_DATABASE_URL": POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database,
                   "UPCOACH_RATE_LIMIT_PER_MINUTE": "100000", "UPCOACH_RATE_LIMIT_BURST": "100000"}  # fmt: skip
            base_url = f"http://127.0.0.1:{port}"
            process = spawn([sys.executable, "-m", "upcoach.cli", "serve"], env, tmp / "server.log",
                            base_url + "/readyz", 300)  # fmt: skip
            try:
                tally, samples = asyncio.run(soak(args.seconds, base_url, process.pid, database, args.concurrency))
                time.sleep(3)  # the record writer's last batch
                missing = len(asyncio.run(missing_records(env["UPCOACH_DATABASE_URL"], tally.answered_ids)))
                audit_ok = asyncio.run(audit_chain_intact(env))
            finally:
                process.terminate()
                process.wait(60)
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    _, _, grown = growth_after_warmup(samples)
    failures = [reason for bad, reason in ((grown > RSS_GROWTH_LIMIT, f"RSS grew {grown * 100:.1f} %"),
                                           (tally.other > 0, f"{tally.other} errors: {dict(tally.errors)}"),
                                           (missing > 0, f"{missing} answered requests without a record"),
                                           (not audit_ok, "audit chain broken")) if bad]  # fmt: skip
    verdict = "passed" if not failures else "FAILED: " + "; ".join(failures)
    plot(samples)
    write_doc(section(args.seconds, tally, samples, verdict, missing, audit_ok))
    print(verdict)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
