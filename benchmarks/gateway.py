"""Gateway benchmark: our API vs LiteLLM's proxy in front of the same instant OpenAI-compatible stub, in one run.

Three targets answer the same request (REQUEST_BODY, header ``X-Privacy-Level: public``), all with the stub's
fixed answer: the stub itself (benchmarks/stub_server.py), our gateway routing to it as its cloud, and LiteLLM's
proxy routing to it as an OpenAI deployment. For each, with wrk (benchmarks/wrk_chat.lua):
- load: LOAD_CONNECTIONS concurrent keep-alive connections for LOAD_SECONDS: requests/s, latency P50/P95/P99,
  errors (socket errors + non-2xx) and 200s that the stub did not answer;
- sequential: one connection, SEQUENTIAL_REQUESTS requests one after another: P50/P95; a gateway's overhead is
  its percentile minus the stub's.
Every target is warmed up first (WARMUP_SECONDS at WARMUP_CONNECTIONS), and every measurement starts only once
all servers are idle, so no target pays for work left over from the previous step.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import httpx
import psutil

from benchmarks.common import ROOT, Server, free_port, python, start_server
from benchmarks.stub_server import ANSWER

LOAD_CONNECTIONS = 1000
LOAD_THREADS = 2  # one per core; wrk shares the two cores with the servers, the same way for every target
LOAD_SECONDS = 20
# Longer than the run: a slow answer is measured as latency, never cut off as a client timeout.
WRK_TIMEOUT_SECONDS = 30
WARMUP_SECONDS = 3
WARMUP_CONNECTIONS = 50
SEQUENTIAL_REQUESTS = 2000
SEQUENTIAL_WARMUP = 200
IDLE_CPU_PERCENT = 5.0  # all servers together, over half a second
QUIET_CPU_PERCENT = 10.0  # the whole machine, before the run starts

REQUEST_BODY = {
    "model": "auto",
    "messages": [{"role": "user", "content": "How do I drink more water?"}],
    "max_tokens": 16,
}
HEADERS = {"Content-Type": "application/json", "X-Privacy-Level": "public"}
WRK_SCRIPT = ROOT / "benchmarks" / "wrk_chat.lua"
LITELLM_VERSION = "1.110.2"
LITELLM_VENV = ROOT / "benchmarks" / ".peers" / "litellm-venv"
CHAT_PATH = "/v1/chat/completions"


@dataclass
class WrkStats:
    requests: int
    seconds: float
    rps: float  # successful answers only: a gateway that fails fast must not look faster for it
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]  # connect, read, write, timeout, non2xx: each a failed request or socket error
    wrong: int  # 200s without the stub's answer

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Result:
    name: str
    command: str
    load: WrkStats | None = None
    sequential: WrkStats | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None


# ---- wrk ----------------------------------------------------------------------------------------------------------
def raise_open_files() -> int:
    """Lift this process's open-file limit as far as allowed; wrk and the servers inherit it. 1,000 clients need
    ~1,000 descriptors in wrk and up to 2,000 in a gateway (both sides of every connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wrk_version() -> str:
    # `wrk -v` prints its version line and then its usage, and exits non-zero.
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].split(" Copyright")[0].removeprefix("wrk ").strip()


def wrk(url: str, *, connections: int, threads: int, seconds: int, limit: int = 0) -> WrkStats:
    """One wrk run; with ``limit`` it ends after that many responses (``seconds`` is then only a cap)."""
    args = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT_SECONDS}s",
        "-s", str(WRK_SCRIPT), url, "--", json.dumps(REQUEST_BODY, separators=(",", ":")), ANSWER, str(limit),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if line.strip() == "WRK_LIMIT":
            process.send_signal(signal.SIGINT)  # wrk stops all threads, prints its summary and runs done()
    process.wait()
    for line in output:
        if line.startswith("WRK_JSON "):
            raw = json.loads(line.removeprefix("WRK_JSON "))
            seconds_run = raw["duration_us"] / 1e6
            return WrkStats(
                requests=raw["requests"],
                seconds=seconds_run,
                rps=(raw["requests"] - raw["non2xx"] - raw["wrong"]) / seconds_run if seconds_run else 0.0,
                p50_ms=raw["p50_us"] / 1000,
                p95_ms=raw["p95_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                mean_ms=raw["mean_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
                errors={k: raw[k] for k in ("connect", "read", "write", "timeout", "non2xx")},
                wrong=raw["wrong"],
            )
    raise RuntimeError(f"wrk printed no result ({process.returncode}):\n{''.join(output)[-2000:]}")


# ---- measurement --------------------------------------------------------------------------------------------------
def _processes(servers: list[Server]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for server in servers:
        try:
            proc = psutil.Process(server.process.pid)
            procs += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return procs


def wait_idle(servers: list[Server], timeout: float = 180) -> None:
    """Until the servers stop working on requests abandoned by the previous step (wrk's closed connections)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        procs = _processes(servers)
        for proc in procs:
            proc.cpu_percent(None)
        time.sleep(0.5)
        busy = 0.0
        for proc in procs:
            try:
                busy += proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
        quiet = quiet + 1 if busy < IDLE_CPU_PERCENT else 0


def wait_quiet_machine(timeout: float = 300) -> float:
    """Wait until nothing else keeps the cores busy (the two cores are shared with whatever else runs here);
    returns the CPU share in use when measuring starts, reported beside the figures."""
    deadline = time.monotonic() + timeout
    busy = psutil.cpu_percent(interval=2)
    while busy > QUIET_CPU_PERCENT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=2)
    return busy


class ForeignCpu:
    """CPU time used by processes outside this benchmark (not this process nor its descendants) between start()
    and share(): the two cores are shared, and a figure measured while something else ran must say so. Processes
    that start and end between the two snapshots are missed; long-running ones, which matter, are not."""

    def __init__(self) -> None:
        self._started = 0.0
        self._before: dict[tuple[int, float], float] = {}

    @staticmethod
    def _foreign() -> dict[tuple[int, float], float]:
        ours = {psutil.Process().pid, *(p.pid for p in psutil.Process().children(recursive=True))}
        seen: dict[tuple[int, float], float] = {}
        for proc in psutil.process_iter(["pid", "create_time", "cpu_times"]):
            times = proc.info["cpu_times"]
            if proc.info["pid"] not in ours and times is not None:
                seen[(proc.info["pid"], proc.info["create_time"])] = times.user + times.system
        return seen

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = self._foreign()

    def share(self) -> float:
        """Percent of one core used by foreign processes since start()."""
        used = sum(cpu - self._before.get(key, 0.0) for key, cpu in self._foreign().items())
        return 100 * used / max(time.monotonic() - self._started, 1e-9)


def check_answer(base_url: str, name: str) -> None:
    """One request by hand before any load: it must be a 200 carrying the stub's answer."""
    response = httpx.post(base_url + CHAT_PATH, json=REQUEST_BODY, headers=HEADERS, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{name} answered {response.status_code}: {response.text[:500]}")
    content = response.json()["choices"][0]["message"]["content"]
    if content != ANSWER:
        raise RuntimeError(f"{name} answered {content!r}, not the stub's answer")


def measure(result: Result, server: Server, servers: list[Server]) -> Result:
    """Warm up, then the sequential run, then the load run, each from idle. ``servers``: all that must be idle."""
    url = server.base_url + CHAT_PATH
    check_answer(server.base_url, result.name)
    wrk(url, connections=1, threads=1, seconds=120, limit=SEQUENTIAL_WARMUP)
    wrk(url, connections=WARMUP_CONNECTIONS, threads=LOAD_THREADS, seconds=WARMUP_SECONDS)
    wait_idle(servers)
    result.sequential = wrk(url, connections=1, threads=1, seconds=600, limit=SEQUENTIAL_REQUESTS)
    wait_idle(servers)
    result.load = wrk(url, connections=LOAD_CONNECTIONS, threads=LOAD_THREADS, seconds=LOAD_SECONDS)
    result.rss_mb, result.peak_rss_mb = server.rss_mb()
    wait_idle(servers)  # before stopping: a server busy with abandoned requests may be slow to shut down
    return result


# ---- targets ------------------------------------------------------------------------------------------------------
def start_stub() -> Server:
    port = free_port()
    return start_server("stub", [python(), "-m", "benchmarks.stub_server", "--port", str(port)], port, "/v1/models")


# Run-specific values, shown by what they are.
_SHOWN = {"UPCOACH_CLOUD_BASE_URL": "<stub>/v1", "UPCOACH_DATA_DIR": "<temp dir>"}


def bench_upcoach(stub: Server, data_dir: Path) -> Result:
    port = free_port()
    env = {
        "UPCOACH_LOAD_MODEL": "false",  # no local model: public requests route to the cloud, here the stub
        "UPCOACH_CLOUD_BASE_URL": stub.base_url + "/v1",
        "UPCOACH_CLOUD_API_KEY": "x",
        "UPCOACH_CLOUD_MODEL": "gpt-4o-mini",
        "UPCOACH_DATA_DIR": str(data_dir),  # SQLite request records are written, in the background, as in production
        # No authentication, like LiteLLM without a master key below: the same work on both sides.
        "UPCOACH_AUTH": "off",
    }
    result = Result(
        "upcoach gateway",
        "python -m upcoach.cli serve --port P --log-level warning; env "
        + " ".join(f"{k}={_SHOWN.get(k, v)}" for k, v in env.items()),
    )
    # /readyz is 503 without a local model by design; /healthz says the process serves.
    server = start_server(
        "upcoach-gateway",
        [python(), "-m", "upcoach.cli", "serve", "--port", str(port), "--log-level", "warning"],
        port,
        "/healthz",
        env=env,
    )
    try:
        measure(result, server, [server, stub])
    finally:
        server.stop()
    return result


LITELLM_CONFIG = """\
model_list:
  - model_name: auto
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {api_base}
      api_key: x
general_settings:
  disable_spend_logs: true   # no per-request spend rows (there is no database either)
  disable_error_logs: true
litellm_settings:
  set_verbose: false
"""
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",  # its docs' production advice: no info logs
    "LITELLM_MODE": "PRODUCTION",  # no .env loading
    "LITELLM_OFFLINE_MODE": "true",  # no fetching of cost maps or other catalogs at start (no network here)
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # Since 1.10x the proxy refuses to start without a master key. Our gateway has no authentication yet, so
    # LiteLLM runs without one too: like for like, and its cheapest path.
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
}


def litellm_installed_version() -> str:
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def bench_litellm(stub: Server, work_dir: Path) -> Result:
    config = work_dir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(api_base=stub.base_url + "/v1"))
    port = free_port()
    args = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]  # fmt: skip
    result = Result(
        f"LiteLLM proxy {LITELLM_VERSION}",
        "litellm --config litellm.yaml --host 127.0.0.1 --port P --num_workers 1; env "
        + " ".join(f"{k}={v}" for k, v in LITELLM_ENV.items()),
    )
    server = start_server("litellm", args, port, "/health/liveliness", env=LITELLM_ENV, timeout=300)
    try:
        measure(result, server, [server, stub])
    finally:
        server.stop()
    return result


def versions() -> dict[str, str]:
    ours = {name: metadata.version(name) for name in ("uvicorn", "uvloop", "httptools", "fastapi", "openai")}
    return {
        "wrk": wrk_version(),
        "litellm": litellm_installed_version(),
        **{f"ours: {k}": v for k, v in ours.items()},
    }


def run(work_dir: Path) -> tuple[list[Result], dict[str, str]]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: `make bench` installs it (apt-get install wrk)")
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        raise RuntimeError(f"no LiteLLM at {LITELLM_VENV}: `make bench` creates it")
    installed = litellm_installed_version()
    if installed != LITELLM_VERSION:
        raise RuntimeError(f"LiteLLM {installed} in {LITELLM_VENV}, expected {LITELLM_VERSION}: run `make bench`")
    open_files = raise_open_files()
    background = wait_quiet_machine()
    foreign = ForeignCpu()
    foreign.start()
    stub = start_stub()
    try:
        results = [
            measure(Result("stub, direct", "python -m benchmarks.stub_server --port P"), stub, [stub]),
            bench_upcoach(stub, work_dir / "upcoach-data"),
            bench_litellm(stub, work_dir),
        ]
    finally:
        stub.stop()
    info = versions()
    info["open files limit"] = str(open_files)
    info["CPU busy before the run"] = f"{background:.0f}%"
    info["other processes during the run"] = f"{foreign.share():.0f}% of one core"
    return results, info


# ---- report -------------------------------------------------------------------------------------------------------
def to_markdown(results: list[Result]) -> str:
    stub = results[0].sequential
    lines = [
        f"| target | answers/s (2xx), {LOAD_CONNECTIONS:,} clients | P50 / P95 / P99 ms | errors "
        "| sequential P50 / P95 ms "
        "| overhead P50 / P95 ms | RSS after load / peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        load, seq = r.load, r.sequential
        assert load is not None and seq is not None and stub is not None
        overhead = "—" if r is results[0] else f"{seq.p50_ms - stub.p50_ms:.2f} / {seq.p95_ms - stub.p95_ms:.2f}"
        lines.append(
            f"| {r.name} | {load.rps:,.0f} | {load.p50_ms:.0f} / {load.p95_ms:.0f} / {load.p99_ms:.0f} "
            f"| {_errors(load, seq)} | {seq.p50_ms:.2f} / {seq.p95_ms:.2f} | {overhead} "
            f"| {r.rss_mb:.0f} / {r.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def goals(results: list[Result]) -> list[str]:
    """The issue's goals for our gateway, each with the measured figure and whether it is met."""
    stub, ours, peer = results
    assert stub.sequential and ours.sequential and ours.load and peer.load
    ratio = ours.load.rps / peer.load.rps if peer.load.rps else float("inf")
    p50 = ours.sequential.p50_ms - stub.sequential.p50_ms
    p95 = ours.sequential.p95_ms - stub.sequential.p95_ms
    errors = ours.load.error_count + ours.load.wrong + ours.sequential.error_count + ours.sequential.wrong

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    return [
        f"- successful requests/s vs LiteLLM: {ratio:.2f}x (goal at least 2x): {verdict(ratio >= 2)}",
        f"- overhead P50: {p50:.2f} ms (goal at most 1 ms): {verdict(p50 <= 1)}",
        f"- overhead P95: {p95:.2f} ms (goal at most 3 ms): {verdict(p95 <= 3)}",
        f"- errors: {errors} (goal 0): {verdict(errors == 0)}",
    ]


def _errors(load: WrkStats, seq: WrkStats) -> str:
    total = load.error_count + seq.error_count
    parts = [f"{n} {kind}" for kind, n in load.errors.items() if n]
    parts += [f"{n} {kind} (sequential)" for kind, n in seq.errors.items() if n]
    if load.wrong or seq.wrong:
        parts.append(f"{load.wrong + seq.wrong} answers not from the stub")
        total += load.wrong + seq.wrong
    return f"{total} ({', '.join(parts)})" if parts else "0"
