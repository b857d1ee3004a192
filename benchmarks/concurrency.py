"""Concurrency benchmark: many users on one local model, our continuous-batching engine vs llama.cpp's
`llama-server -np N` and `llama_cpp.server`.

Measures, on the same GGUF file and thread count, through each server's OpenAI-compatible streaming API:
- aggregate and per-stream decode tokens/s with 1, 2, 4, 8 and 16 streams started together (each a new
  conversation behind the coaching system prompt, a different question, up to ``STREAM_TOKENS`` tokens);
- time to first token of a new conversation arriving while 6 others decode, P50/P95 over ``ARRIVALS`` arrivals;
- whether any stream was lost (an error or no content), and the server's resident memory after the run.

`benchmarks/run.py --only concurrency` writes the section of docs/benchmarks.md.

The `llama-server` peer is built once from the llama.cpp that the installed llama-cpp-python's sdist vendors (the
same kernels our engine runs), with the Makefile's flags: ggml's AMX kernels off (they crash on this host's CPU),
-march=native otherwise. The sdist comes through pip; the build (a few minutes on 2 cores) goes to
benchmarks/.peers/, which is never committed. `python -m benchmarks.concurrency --build-peer` builds it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import (
    COACH_SYSTEM_PROMPT,
    ROOT,
    USER_MESSAGES,
    Server,
    free_port,
    median,
    pct,
    python,
    start_llama_cpp_server,
    start_server,
)

PEERS = ROOT / "benchmarks" / ".peers"
# The Makefile's LLAMA_CPU_FLAGS: the wheel our engine runs is built the same way.
AMX_OFF = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"

HEADING = "## Concurrency:"
LEVELS = (1, 2, 4, 8, 16)
STREAM_TOKENS = 32
BACKGROUND = 6
BACKGROUND_TOKENS = 400  # long enough to still be decoding while every arrival is measured
ARRIVALS = 6


@dataclass
class Level:
    streams: int
    wall_s: float
    tokens: int
    aggregate_tps: float
    per_stream_tps: float
    lost: int


@dataclass
class Result:
    name: str
    levels: list[Level] = field(default_factory=list)
    ttft_under_load_ms: list[float] = field(default_factory=list)
    lost: int = 0
    rss_mb: float | None = None


async def _stream(client: httpx.AsyncClient, user: str, max_tokens: int, ready: asyncio.Event | None = None) -> dict:
    """One streamed chat completion: start, first and last content time, completion tokens; error on failure."""
    body = {
        "model": "default",
        "messages": [{"role": "system", "content": COACH_SYSTEM_PROMPT}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = last = None
    pieces = tokens = 0
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                choices = event.get("choices") or []
                if choices and choices[0].get("delta", {}).get("content"):
                    now = time.perf_counter()
                    if first is None:
                        first = now
                        if ready is not None:
                            ready.set()
                    last = now
                    pieces += 1
    except httpx.HTTPError as exc:
        return {"error": type(exc).__name__}
    if first is None or last is None:
        return {"error": "no content"}
    return {"started": started, "first": first, "last": last, "tokens": tokens or pieces}


async def _level(client: httpx.AsyncClient, n: int) -> Level:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_stream(client, USER_MESSAGES[i % len(USER_MESSAGES)], STREAM_TOKENS) for i in range(n))
    )
    wall = time.perf_counter() - started
    ok = [r for r in results if "error" not in r]
    tokens = sum(r["tokens"] for r in ok)
    rates = [(r["tokens"] - 1) / (r["last"] - r["first"]) for r in ok if r["tokens"] > 1 and r["last"] > r["first"]]
    # Aggregate: every token produced over the span in which the streams were decoding together.
    span = max((r["last"] for r in ok), default=started) - min((r["first"] for r in ok), default=started)
    aggregate = (tokens - len(ok)) / span if span > 0 else 0.0
    return Level(n, wall, tokens, aggregate, median(rates) if rates else 0.0, n - len(ok))


async def _ttft_under_load(client: httpx.AsyncClient) -> tuple[list[float], int]:
    """New conversations arriving one by one while ``BACKGROUND`` others decode long answers."""
    events = [asyncio.Event() for _ in range(BACKGROUND)]
    background = [
        asyncio.create_task(_stream(client, USER_MESSAGES[i], BACKGROUND_TOKENS, events[i])) for i in range(BACKGROUND)
    ]
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout=900)
    ttfts: list[float] = []
    lost = 0
    for i in range(ARRIVALS):
        result = await _stream(client, USER_MESSAGES[(BACKGROUND + i) % len(USER_MESSAGES)], 4)
        if "error" in result:
            lost += 1
        else:
            ttfts.append((result["first"] - result["started"]) * 1000)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    return ttfts, lost


async def _measure(name: str, base_url: str) -> Result:
    result = Result(name)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=1800, limits=limits) as client:
        await _stream(client, "Hello", 4)  # warm-up: the system prompt seen once, as in production
        for n in LEVELS:
            level = await _level(client, n)
            result.levels.append(level)
            result.lost += level.lost
        result.ttft_under_load_ms, lost = await _ttft_under_load(client)
        result.lost += lost
    return result


def bench_upcoach(model: Path, threads: int, ctx: int, data_dir: Path, parallel: int) -> Result:
    port = free_port()
    server = start_server(
        "upcoach-concurrency",
        [python(), "-m", "upcoach.cli", "serve", "--port", str(port), "--model", str(model), "--log-level", "warning",
         "--parallel", str(parallel)],
        port,
        "/readyz",
        env={"UPCOACH_THREADS": str(threads), "UPCOACH_CONTEXT_SIZE": str(ctx), "UPCOACH_DATA_DIR": str(data_dir),
             "UPCOACH_AUTH": "off", "UPCOACH_QUEUE_DEPTH": "64"},
    )  # fmt: skip
    return _measured(server, f"upcoach serve --parallel {parallel}")


def bench_llama_cpp_server(model: Path, threads: int, ctx: int) -> Result:
    server = start_llama_cpp_server("llama_cpp.server-concurrency", model, threads, ctx)
    return _measured(server, "python -m llama_cpp.server (defaults)")


def _measured(server: Server, name: str) -> Result:
    """Measure a started server, read its peak memory, and stop it."""
    try:
        result = asyncio.run(_measure(name, server.base_url))
        result.rss_mb = server.rss_mb()[1]
    finally:
        server.stop()
    return result


def llama_server_binary() -> Path:
    """benchmarks/.peers/llama-server-<version>-noamx, built on first use from the llama-cpp-python sdist's vendored
    llama.cpp (the version installed here, so the same kernels as our engine)."""
    version = importlib.metadata.version("llama-cpp-python")
    binary = PEERS / f"llama-server-{version}-noamx" / "llama-server"
    if binary.exists():
        return binary
    PEERS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=PEERS, prefix="llama-server-build-") as tmp:
        work = Path(tmp)
        subprocess.run([python(), "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(work)], check=True)  # fmt: skip
        with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as sdist:
            sdist.extractall(work, filter="data")
        source = next(p for p in work.glob("llama_cpp_python-*") if p.is_dir()) / "vendor" / "llama.cpp"
        build = work / "build"
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF",
             f"-DCMAKE_C_FLAGS={AMX_OFF}", f"-DCMAKE_CXX_FLAGS={AMX_OFF}"],
            check=True,
        )  # fmt: skip
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", binary)
    return binary


def bench_llama_server(model: Path, threads: int, ctx: int, parallel: int) -> Result:
    """`llama-server -np N`: N slots sharing one context of N x ``ctx`` tokens (each slot ``ctx``, as ours)."""
    port = free_port()
    server = start_server(
        "llama-server-concurrency",
        [str(llama_server_binary()), "-m", str(model), "-t", str(threads), "-c", str(ctx * parallel),
         "-np", str(parallel), "--host", "127.0.0.1", "--port", str(port)],
        port,
        "/health",
        timeout=300,
    )  # fmt: skip
    return _measured(server, f"llama-server -np {parallel}")


def run(model: Path, threads: int, ctx: int, data_dir: Path, parallel: int, peers: bool = True) -> list[Result]:
    results = [bench_upcoach(model, threads, ctx, data_dir, parallel)]
    if peers:
        results.append(bench_llama_server(model, threads, ctx, parallel))
        results.append(bench_llama_cpp_server(model, threads, ctx))
    return results


def to_markdown(results: list[Result]) -> str:
    rows = [
        "| server | "
        + " | ".join(f"{n} streams: aggregate / per stream tok/s" for n in LEVELS)
        + " | 8 vs 1 | TTFT, new conversation while 6 decode: P50 / P95 ms | streams lost | peak RSS MB |",
        "|---|" + "---|" * (len(LEVELS) + 4),
    ]
    for result in results:
        by_n = {level.streams: level for level in result.levels}
        cells = [f"{by_n[n].aggregate_tps:.1f} / {by_n[n].per_stream_tps:.1f}" if n in by_n else "-" for n in LEVELS]
        speedup = (
            f"{by_n[8].aggregate_tps / by_n[1].aggregate_tps:.2f}x"
            if 1 in by_n and 8 in by_n and by_n[1].aggregate_tps
            else "-"
        )
        ttft = result.ttft_under_load_ms
        ttft_cell = f"{pct(ttft, 50):.0f} / {pct(ttft, 95):.0f}" if ttft else "-"
        rss = f"{result.rss_mb:.0f}" if result.rss_mb else "-"
        rows.append(f"| {result.name} | " + " | ".join(cells) + f" | {speedup} | {ttft_cell} | {result.lost} | {rss} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Build the llama-server peer (the measurement runs from run.py).")
    parser.add_argument("--build-peer", action="store_true", help="build benchmarks/.peers/llama-server and exit")
    if parser.parse_args().build_peer:
        print(llama_server_binary())
