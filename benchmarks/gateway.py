"""Gateway benchmark: our API vs LiteLLM's proxy in front of the same instant OpenAI-compatible stub, in one run.

Targets, each answering with the stub's fixed answer (benchmarks/stub_server.py):
- the stub itself (the "direct call" every overhead is measured against);
- our gateway, authentication on (a real API key), the whole path on: guard, privacy settings lookup, feature
  extraction, rate limiter, request records; on ``/v1/chat/completions`` and on ``/api/ai/hybrid/process``;
- LiteLLM's proxy with a master key, 1 and 2 workers, on ``/v1/chat/completions`` (it has no hybrid route).
Every request carries COACHING_REQUEST, a realistic public coaching question (``X-Privacy-Level: public``).

Two measurements per target and route:
- sequential (benchmarks/seqclient.py, one keep-alive connection): non-streamed total, streamed first token and
  streamed total, P50/P95/P99; a gateway's overhead is its percentile minus the stub's;
- load (wrk + benchmarks/wrk_chat.lua, non-streamed) at each of LOAD_CONNECTIONS: answers/s (2xx carrying the
  stub's answer), raw latency percentiles (wrk does not correct for coordinated omission), and every status code,
  socket error and timeout counted on its own.
Every target is warmed up first, and every measurement starts only once all servers are idle.

``python -m benchmarks.gateway --quick`` runs a shorter pass and prints the tables (for measuring a change);
``benchmarks/run.py --only gateway`` runs the full one and writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import psutil
import redis

from benchmarks.common import ROOT, Server, free_port, machine, pct, python, start_server
from benchmarks.seqclient import SequentialClient
from benchmarks.stub_server import ANSWER, FIRST_PIECE

HEADING = "## Gateway:"
LOAD_CONNECTIONS = (50, 1000)
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
OUR_WORKERS = (1, 2)
# Several workers share their state through Redis (`serve --workers N` refuses to start without it); a database
# of the benchmark's own, flushed before each run.
BENCH_REDIS_URL = "redis://127.0.0.1:6379/13"
LITELLM_WORKERS = (1, 2)

COACHING_REQUEST = (
    "I've been trying to build a morning routine for three weeks: wake at 6:30, ten minutes of stretching, then "
    "planning my day before I open email. It works on weekdays, but every weekend it falls apart and Monday feels "
    "like starting over. How can I make the routine survive weekends without turning it into a chore?"
)
MAX_TOKENS = 64
CHAT_PATH = "/v1/chat/completions"
HYBRID_PATH = "/api/ai/hybrid/process"
BODIES: dict[str, dict[str, object]] = {
    CHAT_PATH: {"model": "auto", "messages": [{"role": "user", "content": COACHING_REQUEST}], "max_tokens": MAX_TOKENS},
    HYBRID_PATH: {
        "messages": [{"role": "user", "content": COACHING_REQUEST}],
        "routingHints": {"privacyLevel": "public"},
        "maxTokens": MAX_TOKENS,
    },
}
WRK_SCRIPT = ROOT / "benchmarks" / "wrk_chat.lua"
LITELLM_VERSION = "1.110.2"
LITELLM_VENV = ROOT / "benchmarks" / ".peers" / "litellm-venv"
LITELLM_MASTER_KEY = "sk-bench-master-key-0123456789"


@dataclass
class Percentiles:
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        return cls(pct(values, 50), pct(values, 95), pct(values, 99))

    def minus(self, other: Percentiles) -> Percentiles:
        return Percentiles(self.p50 - other.p50, self.p95 - other.p95, self.p99 - other.p99)

    def __str__(self) -> str:
        return f"{self.p50:.2f} / {self.p95:.2f} / {self.p99:.2f}"


@dataclass
class Sequential:
    requests: int
    plain: Percentiles  # non-streamed, whole answer
    first_token: Percentiles  # streamed, until the answer's first piece arrived
    streamed: Percentiles  # streamed, whole answer
    statuses: dict[str, int]


@dataclass
class Load:
    connections: int
    requests: int
    seconds: float
    rps: float  # answers only (2xx carrying the stub's answer): failing fast must not look faster
    latency_ms: Percentiles
    statuses: dict[str, int]
    socket_errors: dict[str, int]  # connect, read, write
    timeouts: int
    wrong: int  # 2xx without the stub's answer


@dataclass
class Result:
    name: str
    route: str
    workers: int
    command: str
    sequential: Sequential | None = None
    loads: list[Load] = field(default_factory=list)
    rss_mb: float | None = None
    peak_rss_mb: float | None = None


@dataclass
class Plan:
    """How much to measure: the full run for docs/benchmarks.md, or a quick pass while working on a change."""

    sequential: int = SEQUENTIAL_REQUESTS
    sequential_warmup: int = SEQUENTIAL_WARMUP
    load_seconds: int = LOAD_SECONDS
    connections: tuple[int, ...] = LOAD_CONNECTIONS
    targets: tuple[str, ...] = ("stub", "ours", "litellm")


QUICK = Plan(sequential=400, sequential_warmup=100, load_seconds=8)


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


def wrk_args(
    url: str, body: dict[str, object], auth: str, *, connections: int, seconds: int, limit: int = 0
) -> list[str]:
    return [
        "wrk", f"-t{min(LOAD_THREADS, connections)}", f"-c{connections}", f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT_SECONDS}s", "-s", str(WRK_SCRIPT), url, "--",
        json.dumps(body, separators=(",", ":")), ANSWER, str(limit), auth,
    ]  # fmt: skip


def wrk(url: str, body: dict[str, object], auth: str, *, connections: int, seconds: int, limit: int = 0) -> Load:
    """One wrk run; with ``limit`` it ends after that many responses (``seconds`` is then only a cap)."""
    args = wrk_args(url, body, auth, connections=connections, seconds=seconds, limit=limit)
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
            statuses = {k: raw["statuses"][k] for k in sorted(raw["statuses"])}
            ok = sum(n for code, n in statuses.items() if code.startswith("2")) - raw["wrong"]
            return Load(
                connections=connections,
                requests=raw["requests"],
                seconds=seconds_run,
                rps=ok / seconds_run if seconds_run else 0.0,
                latency_ms=Percentiles(raw["p50_us"] / 1000, raw["p95_us"] / 1000, raw["p99_us"] / 1000),
                statuses=statuses,
                socket_errors={k: raw[k] for k in ("connect", "read", "write")},
                timeouts=raw["timeout"],
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


def _headers(auth: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Privacy-Level": "public"}
    return {**headers, "Authorization": auth} if auth else headers


def check_answer(url: str, body: dict[str, object], auth: str, name: str) -> None:
    """One request by hand before any load: it must be a 200 carrying the stub's answer."""
    response = httpx.post(url, json=body, headers=_headers(auth), timeout=60)
    if response.status_code != 200 or ANSWER not in response.text:
        raise RuntimeError(f"{name} answered {response.status_code}, not the stub's answer: {response.text[:500]}")


def sequential(url: str, body: dict[str, object], auth: str, plan: Plan) -> Sequential:
    """Non-streamed and streamed requests, alternating, one at a time on one connection each."""
    plain = SequentialClient(url, body, _headers(auth), FIRST_PIECE)
    streamed = SequentialClient(url, {**body, "stream": True}, _headers(auth), FIRST_PIECE)
    totals: list[float] = []
    firsts: list[float] = []
    stream_totals: list[float] = []
    statuses: dict[str, int] = {}
    try:
        for i in range(plan.sequential_warmup + plan.sequential):
            a, b = plain.request(), streamed.request()
            for timing in (a, b):
                statuses[str(timing.status)] = statuses.get(str(timing.status), 0) + 1
            if i >= plan.sequential_warmup:
                totals.append(a.total_ms)
                firsts.append(b.first_token_ms)
                stream_totals.append(b.total_ms)
    finally:
        plain.close()
        streamed.close()
    return Sequential(plan.sequential, Percentiles.of(totals), Percentiles.of(firsts), Percentiles.of(stream_totals),
                      statuses)  # fmt: skip


def measure(result: Result, server: Server, servers: list[Server], auth: str, plan: Plan) -> Result:
    """Warm up, then the sequential run, then each load, each from idle. ``servers``: all that must be idle."""
    url, body = server.base_url + result.route, BODIES[result.route]
    check_answer(url, body, auth, result.name)
    wrk(url, body, auth, connections=WARMUP_CONNECTIONS, seconds=WARMUP_SECONDS)
    wait_idle(servers)
    result.sequential = sequential(url, body, auth, plan)
    for connections in plan.connections:
        wait_idle(servers)
        result.loads.append(wrk(url, body, auth, connections=connections, seconds=plan.load_seconds))
    result.rss_mb, result.peak_rss_mb = server.rss_mb()
    wait_idle(servers)  # before stopping: a server busy with abandoned requests may be slow to shut down
    return result


# ---- targets ------------------------------------------------------------------------------------------------------
def start_stub() -> Server:
    port = free_port()
    return start_server("stub", [python(), "-m", "benchmarks.stub_server", "--port", str(port)], port, "/v1/models")


# Run-specific values, shown by what they are.
_SHOWN = {"UPCOACH_CLOUD_BASE_URL": "<stub>/v1", "UPCOACH_DATA_DIR": "<temp dir>"}


def upcoach_env(stub: Server, data_dir: Path) -> dict[str, str]:
    return {
        "UPCOACH_LOAD_MODEL": "false",  # no local model: public requests route to the cloud, here the stub
        "UPCOACH_CLOUD_BASE_URL": stub.base_url + "/v1",
        "UPCOACH_CLOUD_API_KEY": "x",
        "UPCOACH_CLOUD_MODEL": "gpt-4o-mini",
        "UPCOACH_DATA_DIR": str(data_dir),  # SQLite: keys, privacy settings, request records, as in production
        "UPCOACH_AUTH": "on",
        # The limiter runs on every request (its cost is measured) but never refuses one: the load is the point.
        "UPCOACH_RATE_LIMIT_PER_MINUTE": "100000000",
        "UPCOACH_RATE_LIMIT_BURST": "100000000",
    }


def create_key(env: dict[str, str]) -> str:
    """A real API key (role user) in the gateway's database: the benchmark authenticates like a client."""
    out = subprocess.run(
        [python(), "-m", "upcoach.cli", "keys", "create", "--user", "bench-user", "--role", "user"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return "Bearer " + out.stdout.strip().splitlines()[-1]


def bench_upcoach(stub: Server, data_dir: Path, workers: int, plan: Plan) -> list[Result]:
    env = upcoach_env(stub, data_dir)
    if workers > 1:
        with redis.Redis.from_url(BENCH_REDIS_URL) as shared:
            shared.flushdb()
        env["UPCOACH_REDIS_URL"] = BENCH_REDIS_URL
    auth = create_key(env)
    port = free_port()
    args = [python(), "-m", "upcoach.cli", "serve", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        args += ["--workers", str(workers)]
    shown = " ".join(f"{k}={_SHOWN.get(k, v)}" for k, v in env.items())
    flag = f" --workers {workers}" if workers > 1 else ""
    command = f"python -m upcoach.cli serve --port P --log-level warning{flag}; env {shown}"
    # /readyz is 503 without a local model by design; /healthz says the process serves.
    server = start_server("upcoach-gateway", args, port, "/healthz", env=env)
    results = [Result("upcoach gateway", route, workers, command) for route in (CHAT_PATH, HYBRID_PATH)]
    try:
        for result in results:
            measure(result, server, [server, stub], auth, plan)
    finally:
        server.stop()
    return results


LITELLM_CONFIG = """\
model_list:
  - model_name: auto
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {api_base}
      api_key: x
general_settings:
  master_key: {master_key}
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
}


def litellm_installed_version() -> str:
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def bench_litellm(stub: Server, work_dir: Path, workers: int, plan: Plan) -> Result:
    config = work_dir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(api_base=stub.base_url + "/v1", master_key=LITELLM_MASTER_KEY))
    port = free_port()
    args = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", str(workers)]  # fmt: skip
    result = Result(
        f"LiteLLM proxy {LITELLM_VERSION}",
        CHAT_PATH,
        workers,
        f"litellm --config litellm.yaml --host 127.0.0.1 --port P --num_workers {workers}; env "
        + " ".join(f"{k}={v}" for k, v in LITELLM_ENV.items()),
    )
    server = start_server("litellm", args, port, "/health/liveliness", env=LITELLM_ENV, timeout=300)
    try:
        measure(result, server, [server, stub], f"Bearer {LITELLM_MASTER_KEY}", plan)
    finally:
        server.stop()
    return result


def versions() -> dict[str, str]:
    ours = {name: metadata.version(name) for name in ("uvicorn", "uvloop", "httptools", "fastapi", "aiohttp")}
    found = {"wrk": wrk_version()}
    if (LITELLM_VENV / "bin" / "python").exists():
        found["litellm"] = litellm_installed_version()
    return {**found, **{f"ours: {k}": v for k, v in ours.items()}}


def run(work_dir: Path, plan: Plan | None = None) -> tuple[list[Result], dict[str, str]]:
    plan = plan or Plan()
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: `make bench` installs it (apt-get install wrk)")
    if "litellm" in plan.targets:
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
    results: list[Result] = []
    try:
        results.append(measure(Result("stub, direct", CHAT_PATH, 1, "python -m benchmarks.stub_server --port P"),
                               stub, [stub], "", plan))  # fmt: skip
        if "ours" in plan.targets:
            for workers in OUR_WORKERS:
                results += bench_upcoach(stub, work_dir / f"upcoach-data-{workers}", workers, plan)
        if "litellm" in plan.targets:
            for workers in LITELLM_WORKERS:
                results.append(bench_litellm(stub, work_dir, workers, plan))
    finally:
        stub.stop()
    info = versions()
    info["open files limit"] = str(open_files)
    info["CPU busy before the run"] = f"{background:.0f}%"
    info["other processes during the run"] = f"{foreign.share():.0f}% of one core"
    return results, info


# ---- report -------------------------------------------------------------------------------------------------------
def _label(r: Result) -> str:
    route = "" if r.name.startswith("stub") else f" `{r.route}`"
    workers = "" if r.name.startswith("stub") else f", {r.workers} worker{'s' if r.workers > 1 else ''}"
    return f"{r.name}{route}{workers}"


def sequential_table(results: list[Result]) -> str:
    stub = results[0].sequential
    assert stub is not None
    lines = [
        "| target | non-streamed ms | streamed, first token ms | streamed, total ms "
        "| overhead non-streamed ms | overhead first token ms | overhead streamed total ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.sequential
        assert s is not None
        if r is results[0]:
            overhead = "— | — | —"
        else:
            overhead = f"{s.plain.minus(stub.plain)} | {s.first_token.minus(stub.first_token)} | " + str(
                s.streamed.minus(stub.streamed)
            )
        lines.append(f"| {_label(r)} | {s.plain} | {s.first_token} | {s.streamed} | {overhead} |")
    return "\n".join(lines)


def load_table(results: list[Result]) -> str:
    lines = [
        "| target | connections | answers/s | P50 / P95 / P99 ms | status codes | socket errors (connect/read/write) "
        "| timeouts | RSS after load / peak MB |",
        "|---|---:|---:|---|---|---|---:|---|",
    ]
    for r in results:
        for load in r.loads:
            statuses = ", ".join(f"{code}: {n:,}" for code, n in load.statuses.items()) or "none"
            if load.wrong:
                statuses += f" ({load.wrong:,} 2xx without the stub's answer)"
            errors = " / ".join(str(load.socket_errors[k]) for k in ("connect", "read", "write"))
            lines.append(
                f"| {_label(r)} | {load.connections:,} | {load.rps:,.0f} | {load.latency_ms.p50:.1f} / "
                f"{load.latency_ms.p95:.1f} / {load.latency_ms.p99:.1f} | {statuses} | {errors} | {load.timeouts} "
                f"| {r.rss_mb:.0f} / {r.peak_rss_mb:.0f} |"
            )
    return "\n".join(lines)


def goals(results: list[Result]) -> list[str]:
    """The issue's goals for our gateway, each with the measured figure and whether it is met."""

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    stub = results[0].sequential
    assert stub is not None
    lines: list[str] = []
    ours = [r for r in results if r.name.startswith("upcoach")]
    for r in ours:
        s = r.sequential
        assert s is not None
        for what, mine, base in (("non-streamed", s.plain, stub.plain), ("streamed total", s.streamed, stub.streamed)):
            over = mine.minus(base)
            lines.append(
                f"- overhead, `{r.route}`, {what}: P50 {over.p50:.2f} ms (goal <= 1): {verdict(over.p50 <= 1)}; "
                f"P95 {over.p95:.2f} ms (goal <= 2): {verdict(over.p95 <= 2)}"
            )
    peers = {r.workers: r for r in results if r.name.startswith("LiteLLM")}
    for r in ours:
        peer = peers.get(r.workers)
        if peer is None or r.route != CHAT_PATH:
            continue
        for load, theirs in zip(r.loads, peer.loads, strict=True):
            ratio = load.rps / theirs.rps if theirs.rps else float("inf")
            lines.append(
                f"- answers/s vs LiteLLM, {r.workers} worker(s), {load.connections:,} connections: {ratio:.1f}x "
                f"(goal >= 5x): {verdict(ratio >= 5)}"
            )
    for r in ours:
        for load in r.loads:
            if load.connections < 1000:
                continue
            failures = sum(load.socket_errors.values()) + load.timeouts
            other = sum(n for code, n in load.statuses.items() if not code.startswith("2") and code != "429")
            lines.append(
                f"- `{r.route}`, {load.connections:,} connections: {failures} socket errors and timeouts, "
                f"{other} non-2xx other than 429 (goal 0 and 0): {verdict(failures == 0 and other == 0)}"
            )
    return lines


def section(command: str, plan: Plan | None = None) -> str:
    """The docs/benchmarks.md section, and a JSON copy of the figures in benchmarks/results/gateway.json."""
    from benchmarks import upstream_client  # it imports this module: here, not at the top

    plan = plan or Plan()
    upstream_requests = upstream_client.REQUESTS if plan.sequential >= SEQUENTIAL_REQUESTS else 500
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory() as tmp:
        results, info = run(Path(tmp), plan)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "gateway.json").write_text(
        json.dumps({"versions": info, "results": [asdict(r) for r in results]}, indent=2)
    )
    ours = next((r for r in results if r.name.startswith("upcoach")), None)
    peer = next((r for r in results if r.name.startswith("LiteLLM")), None)
    load = " ".join(wrk_args("URL", {"...": "BODY"}, "AUTH", connections=1000, seconds=plan.load_seconds)[:5])
    return "\n".join(
        [
            f"{HEADING} overhead over a direct call, answers/s and status codes at "
            f"{' and '.join(f'{c:,}' for c in plan.connections)} connections, vs LiteLLM",
            "",
            f"- command: `{command}` (benchmarks/gateway.py); date: {when}",
            f"- machine: {machine()}; the stub, the gateway under test and the load generator share these cores, "
            "the same way for every target",
            f"- upstream: `{results[0].command}` (benchmarks/stub_server.py): raw ASGI on uvicorn with uvloop and "
            "httptools, a fixed answer and usage, streamed (as one write) or not as asked",
            f"- request: a public coaching question of {len(COACHING_REQUEST)} characters (`COACHING_REQUEST`), "
            f"`max_tokens` {MAX_TOKENS}, `X-Privacy-Level: public`; on `{CHAT_PATH}` "
            f"`{json.dumps(BODIES[CHAT_PATH])[:60]}…` and on `{HYBRID_PATH}` with `routingHints.privacyLevel: "
            "public`; every 2xx is checked to carry the stub's answer",
            *(
                [
                    f"- {ours.name}: `{ours.command}`; authenticated with a real API key (role user, "
                    "`upcoach keys create`), so the key check, the rate limiter, the guard (injection, PII, special "
                    "category), the privacy-settings lookup, the feature extraction and the request records are all "
                    "on the path"
                ]
                if ours
                else []
            ),  # fmt: skip
            *(
                [
                    f"- {peer.name}: `litellm --config litellm.yaml --num_workers N`, env "
                    f"{' '.join(f'{k}={v}' for k, v in LITELLM_ENV.items())}; config: model `auto` -> "
                    "`openai/gpt-4o-mini` at the stub, a master key (sent as `Authorization: Bearer`), "
                    "`disable_spend_logs`, `disable_error_logs`, no database, no callbacks (`LITELLM_CONFIG`); its own "
                    "venv from benchmarks/litellm-requirements.txt"
                ]
                if peer
                else []
            ),  # fmt: skip
            f"- sequential: benchmarks/seqclient.py, one keep-alive connection per mode, {plan.sequential:,} "
            f"non-streamed and {plan.sequential:,} streamed requests alternating, after {plan.sequential_warmup} "
            "of each; first token = the first piece of the answer seen on the wire (the stub writes its whole "
            "stream at once, so its first token is its total); overhead = the target's percentile minus the "
            "stub's",
            f"- load: `{load} -s benchmarks/wrk_chat.lua URL -- BODY ANSWER 0 AUTH`, non-streamed, after a "
            f"{WARMUP_SECONDS} s warm-up at {WARMUP_CONNECTIONS} connections; wrk reports raw latencies (no "
            "coordinated-omission correction) over the responses completed in the run; the Lua script counts every "
            "status code, wrk counts socket errors and timeouts (no response within "
            f"{WRK_TIMEOUT_SECONDS} s)",
            "- each run starts once every server is idle again; "
            + "; ".join(f"{k} {v}" for k, v in info.items())
            + ". Figures taken while other work kept the cores busy (see the two CPU figures) are provisional: "
            "latencies most of all, since one busy core delays every request of a sequential run",
            "",
            "Sequential latency and overhead over the direct call (P50 / P95 / P99 ms):",
            "",
            sequential_table(results),
            "",
            "Under load (non-streamed):",
            "",
            load_table(results),
            "",
            *goals(results),
            "",
            "Flame graphs of the whole path under load (py-spy, 50 connections, guard and auth on; "
            "`python -m benchmarks.profile_gateway --label L [--stream]`): before this issue's changes "
            "[chat](profiles/gateway-before-chat-plain.svg), [hybrid](profiles/gateway-before-hybrid-plain.svg), "
            "[chat streamed](profiles/gateway-before-chat-stream.svg), "
            "[hybrid streamed](profiles/gateway-before-hybrid-stream.svg); after "
            "[chat](profiles/gateway-after-chat-plain.svg), [hybrid](profiles/gateway-after-hybrid-plain.svg), "
            "[chat streamed](profiles/gateway-after-chat-stream.svg), "
            "[hybrid streamed](profiles/gateway-after-hybrid-stream.svg). What they show and what was done about it: "
            "[hot-path.md](hot-path.md).",
            "",
            f"CPU per streamed upstream call, one at a time against the stub (`python -m benchmarks.upstream_client`, "
            f"{upstream_requests:,} calls each after {upstream_client.WARMUP}; the process's user + system time):",
            "",
            upstream_client.table(upstream_requests),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway benchmark; prints the section (docs are not touched)")
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter loads")
    parser.add_argument("--targets", default="stub,ours,litellm", help="comma-separated: ours, litellm")
    parser.add_argument("--connections", default=",".join(map(str, LOAD_CONNECTIONS)))
    args = parser.parse_args()
    plan = QUICK if args.quick else Plan()
    plan.targets = tuple(args.targets.split(","))
    plan.connections = tuple(int(c) for c in args.connections.split(",") if c)
    print(section("python -m benchmarks.gateway" + (" --quick" if args.quick else ""), plan))


if __name__ == "__main__":
    main()
