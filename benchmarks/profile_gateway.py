"""Flame graphs of the gateway's hot path: `python -m benchmarks.profile_gateway --label before`.

Starts the stub and our gateway exactly as benchmarks/gateway.py does (auth on with a real key, guard, settings,
records), loads each route with wrk at PROFILE_CONNECTIONS connections (streamed and not, alternating by route),
and samples the gateway process with py-spy meanwhile. Writes docs/profiles/gateway-<label>-<route>.svg.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.common import ROOT, free_port, python, start_server
from benchmarks.gateway import (
    BODIES,
    CHAT_PATH,
    HYBRID_PATH,
    WARMUP_SECONDS,
    check_answer,
    create_key,
    raise_open_files,
    start_stub,
    upcoach_env,
    wait_idle,
    wrk,
)

PROFILE_CONNECTIONS = 50
PROFILE_SECONDS = 20
SAMPLE_RATE = 250  # per second
OUT = ROOT / "docs" / "profiles"
ROUTES = {"chat": CHAT_PATH, "hybrid": HYBRID_PATH}
PY_SPY = str(Path(sys.executable).parent / "py-spy")  # installed by `make bench` (the bench extra)


def profile(label: str, seconds: int, streamed: bool) -> list[Path]:
    raise_open_files()
    OUT.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stub = start_stub()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = upcoach_env(stub, Path(tmp))
            auth = create_key(env)
            port = free_port()
            args = [python(), "-m", "upcoach.cli", "serve", "--port", str(port), "--log-level", "warning"]
            server = start_server("upcoach-gateway", args, port, "/healthz", env=env)
            try:
                for name, path in ROUTES.items():
                    body = {**BODIES[path], "stream": streamed}
                    url = server.base_url + path
                    check_answer(url, BODIES[path], auth, "upcoach gateway")
                    wrk(url, body, auth, connections=PROFILE_CONNECTIONS, seconds=WARMUP_SECONDS)
                    wait_idle([server, stub])
                    kind = "stream" if streamed else "plain"
                    svg = OUT / f"gateway-{label}-{name}-{kind}.svg"
                    sampler = subprocess.Popen(
                        [PY_SPY, "record", "--pid", str(server.process.pid), "--duration", str(seconds),
                         "--rate", str(SAMPLE_RATE), "--format", "flamegraph", "--output", str(svg), "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                    load = threading.Thread(
                        target=wrk,
                        args=(url, body, auth),
                        kwargs={"connections": PROFILE_CONNECTIONS, "seconds": seconds},  # fmt: skip
                    )
                    load.start()
                    load.join()
                    sampler.wait()
                    written.append(svg)
                    wait_idle([server, stub])
            finally:
                server.stop()
    finally:
        stub.stop()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="before, after, ... (part of the file name)")
    parser.add_argument("--seconds", type=int, default=PROFILE_SECONDS)
    parser.add_argument("--stream", action="store_true", help="streamed requests (default: non-streamed)")
    args = parser.parse_args()
    for path in profile(args.label, args.seconds, args.stream):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
