"""Shared fixtures: the real default model and live `upcoach serve` subprocesses on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from upcoach.config import Settings
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry
from upcoach.modelstore.fetch import fetch

COACH_SYSTEM_PROMPT = (
    "You are UpCoach, a warm and practical personal coach. You help people set goals, build habits, "
    "manage stress, sleep better and stay motivated at work. Keep answers short, concrete and kind. "
    "Ask one question at a time when you need more context. Never give medical, legal or financial advice; "
    "suggest a professional when a topic needs one. Use the person's own words when you reflect back what "
    "they said. Offer at most three options, each with a first small step that takes under five minutes."
)


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The default catalog model, fetched (and sha256-verified) into the user's data folder once."""
    override = os.environ.get("UPCOACH_TEST_MODEL")
    if override:
        return Path(override)
    settings = Settings()
    return fetch(get_entry(DEFAULT_MODEL), settings.models_dir)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn(
    cmd: list[str], env: dict[str, str], log_path: Path, ready_url: str, timeout: float
) -> subprocess.Popen[bytes]:
    """Start a server process and wait until ``ready_url`` answers 200; its output goes to ``log_path``."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(ready_url, timeout=2, verify=False).status_code == 200:  # readiness poll only
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError(f"{cmd[:3]} not ready within {timeout}s:\n{log_path.read_text(errors='replace')}")


def start_server(
    tmp: Path,
    env_overrides: dict[str, str],
    *,
    wait_for: str = "/readyz",
    timeout: float = 120,
    scheme: str = "http",
    extra_args: list[str] | None = None,
) -> LiveServer:
    """Run `upcoach serve` on a free port and wait until ``wait_for`` answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "UPCOACH_DATA_DIR": str(tmp / "data"),
        "UPCOACH_PORT": str(port),
        "UPCOACH_HOST": "127.0.0.1",
        # Most API tests exercise routing, not authentication; tests/api/test_auth_api.py runs with auth on.
        "UPCOACH_AUTH": "off",
        **env_overrides,
    }
    base_url = f"{scheme}://127.0.0.1:{port}"
    log_path = tmp / "server.log"
    cmd = [sys.executable, "-m", "upcoach.cli", "serve", "--log-level", "info", *(extra_args or [])]
    process = spawn(cmd, env, log_path, base_url + wait_for, timeout)
    return LiveServer(base_url, process, log_path)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def data_dir_with_model(tmp: Path, model_path: Path) -> Path:
    """A fresh data folder whose catalog model is the already-verified file (linked, not copied)."""
    models = tmp / "data" / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / get_entry(DEFAULT_MODEL).filename
    if not link.exists():
        link.symlink_to(model_path)
    return tmp / "data"


@contextmanager
def model_server(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, name: str, env: dict[str, str]
) -> Iterator[LiveServer]:
    """A live server in a fresh data folder that already holds the verified default model; stopped on exit."""
    tmp = tmp_path_factory.mktemp(name)
    data_dir_with_model(tmp, model_path)
    server = start_server(tmp, env)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[LiveServer]:
    with model_server(tmp_path_factory, model_path, "server", {}) as server:
        yield server


@pytest.fixture(scope="session")
def llama_cpp_peer(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with the real default model: an OpenAI-compatible peer (cloud or pool).

    ``--interrupt_requests False``: its default cuts a running stream short whenever another request waits.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--n_threads", "2",
           "--n_ctx", "2048", "--port", str(port), "--host", "127.0.0.1", "--interrupt_requests", "False"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    log_path = tmp_path_factory.mktemp("llama-cpp-server") / "server.log"
    process = spawn(cmd, dict(os.environ), log_path, url + "/models", 180)
    yield url
    stop_server(LiveServer(url, process, log_path))


@pytest_asyncio.fixture(scope="session")
async def llama_engine(model_path: Path) -> AsyncIterator[object]:
    """One in-process engine on the real model for every test that drives the engine directly (grammar, branches,
    chips): loaded once per test session instead of once per module."""
    from upcoach.llm.llamacpp import LlamaCppEngine
    from upcoach.modelstore.manager import engine_config_for

    settings = Settings(threads=2, context_size=1024, parallel=8, queue_depth=4)
    engine = LlamaCppEngine(engine_config_for(settings, model_path, DEFAULT_MODEL))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
