"""Helpers shared by the benchmarks: servers as subprocesses, percentiles, memory, machine facts."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent

COACH_SYSTEM_PROMPT = (
    "You are UpCoach, a warm, practical personal coach inside a mobile app. Your job is to help people set "
    "meaningful goals, build habits that last, manage stress, sleep better, stay focused and keep their "
    "motivation at work and at home. Follow these rules in every answer. First, keep answers short: three "
    "to six sentences unless the person asks for more detail. Second, be concrete: every suggestion comes "
    "with a first small step that takes under five minutes and can be done today. Third, offer at most "
    "three options and say which one you would start with and why. Fourth, ask at most one question at a "
    "time, and only when you truly need more context to help. Fifth, reflect the person's own words back "
    "to them so they feel heard, without repeating everything they said. Sixth, never give medical, legal "
    "or financial advice; when a topic needs a doctor, a therapist, a lawyer or an accountant, say so "
    "kindly and suggest how to find one. Seventh, if someone mentions self-harm or a crisis, respond with "
    "care and point them to local emergency services and crisis lines right away. Eighth, respect privacy: "
    "never ask for full names, addresses, account numbers or other identifying details. Ninth, celebrate "
    "progress, however small, and treat setbacks as information rather than failure. Tenth, use plain, "
    "friendly language, avoid jargon, and write in the same language the person writes in. When a person "
    "shares a goal, help them make it specific, measurable and time-bound, and suggest how to track it."
)

USER_MESSAGES = [
    "How do I drink more water during the day?",
    "I keep hitting snooze every morning. Any ideas?",
    "My manager gave me harsh feedback and I feel awful.",
    "I want to start running but I always quit after a week.",
    "How can I stop checking my phone during focus time?",
    "I have a presentation on Friday and I'm nervous.",
    "What is a good evening routine for better sleep?",
    "I procrastinate on my thesis every single day.",
    "How do I say no to extra projects at work?",
    "I want to read more books this year.",
    "My team misses deadlines. How can I help as a lead?",
    "I feel stuck in my career. Where do I start?",
    "How can I keep a journaling habit going?",
    "I eat junk food when I'm stressed. What can I do?",
    "How do I prepare for a difficult conversation with a colleague?",
    "I want to save time in my mornings.",
    "How can I be more patient with my kids after work?",
    "I lose motivation halfway through projects.",
    "How do I set a goal I can actually reach?",
    "I get distracted by email all day long.",
]

DECODE_PROMPT = "Write a detailed, long essay about how small daily habits compound over years."


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {psutil.cpu_count(logical=False)} physical / {psutil.cpu_count()} logical cores, "
        f"{mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process and its children, in MB."""
        proc = psutil.Process(self.process.pid)
        procs = [proc, *proc.children(recursive=True)]
        current = sum(p.memory_info().rss for p in procs) / 1e6
        peak = 0.0
        for p in procs:
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak += int(line.split()[1]) * 1024 / 1e6
            except OSError:
                pass
        return current, peak

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(
    name: str, args: list[str], port: int, ready_path: str, env: dict[str, str] | None = None, timeout: float = 180
) -> Server:
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)  # a standalone run may come first
    log = open(ROOT / "benchmarks" / "results" / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see benchmarks/results/{name}.log")
        try:
            if httpx.get(server.base_url + ready_path, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} not ready within {timeout}s")


def python() -> str:
    return sys.executable


def start_llama_cpp_server(name: str, model: Path, threads: int, ctx: int) -> Server:
    """llama-cpp-python's own OpenAI server on a free loopback port, with its defaults otherwise."""
    port = free_port()
    return start_server(
        name,
        [python(), "-m", "llama_cpp.server", "--model", str(model), "--n_threads", str(threads),
         "--n_ctx", str(ctx), "--host", "127.0.0.1", "--port", str(port)],
        port,
        "/v1/models",
    )  # fmt: skip
