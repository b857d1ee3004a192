"""``upcoach serve``: one API process, or N API workers on one port beside one engine process (docs/scaling.md).

Why uvicorn's own multi-process supervisor rather than SO_REUSEPORT processes of our own: it binds the port once
and hands the socket to every worker (no port-stealing by a stray process, works wherever the kernel lacks
SO_REUSEPORT balancing), pings each worker and replaces one that died or hung, and turns SIGTERM/SIGINT into a
graceful stop and SIGHUP into a rolling restart. What it lacks is the engine process; ``Supervisor`` adds it to the
same loop: started before the workers, checked on every round, restarted (with a growing pause, so a model that
cannot load does not spin) when it dies, stopped after the workers have drained.

With one worker nothing of this runs: the app, the model and everything else live in one process, as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import ssl
import tempfile
import time
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path
from socket import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors.multiprocess import Multiprocess

from upcoach.config import Settings
from upcoach.observability.metrics import MULTIPROC_DIR_ENV
from upcoach.shutdown import graceful_timeout

log = logging.getLogger("upcoach.workers")

# Seconds before an engine that died is started again: doubled after each failure that came soon after a start,
# so a model that cannot load costs a log line a minute, not a busy loop.
ENGINE_RESTART_PAUSES = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# An engine that ran this long before dying counts as healthy: the next restart is immediate again.
ENGINE_STABLE_SECONDS = 60.0
ENGINE_STOP_SECONDS = 30.0
WORKER_PING_SECONDS = 30


class ServeConfig(uvicorn.Config):
    """uvicorn's config with our TLS floor: each worker builds its own SSL context in ``load()``, so the floor is
    set there rather than once in the parent."""

    def __init__(self, app: Any, *, tls_min_version: str = "1.2", **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.tls_min_version = tls_min_version

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = (
                ssl.TLSVersion.TLSv1_3 if self.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
            )


def uvicorn_options(settings: Settings, log_level: str) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "log_config": None,  # keep configure_logging's handler (request ids, the JSON format)
        "access_log": False,
        "timeout_graceful_shutdown": graceful_timeout(settings.shutdown_grace),
        # The app trusts X-Forwarded-For only from UPCOACH_TRUSTED_PROXIES; uvicorn's own default would trust it
        # from 127.0.0.1 (or FORWARDED_ALLOW_IPS) behind the app's back.
        "proxy_headers": False,
        "loop": "uvloop",
        "http": "httptools",
        "ssl_certfile": str(settings.tls_certfile) if settings.tls_certfile else None,
        "ssl_keyfile": str(settings.tls_keyfile) if settings.tls_keyfile else None,
    }


def worker_app() -> FastAPI:
    """One API worker's app (uvicorn's factory, called in each worker): settings from the environment the
    supervisor prepared, the local model reached through the engine socket."""
    from upcoach.app import create_app
    from upcoach.observability.logs import configure_logging

    configure_logging(os.environ.get("UPCOACH_LOG_LEVEL", "info"), os.environ.get("UPCOACH_LOG_FORMAT", "text"))
    return create_app(Settings())


def run_engine(socket_path: str, log_level: str) -> None:
    """The engine process's main: serve the local model on ``socket_path`` until SIGTERM."""
    from upcoach.engine_app import create_engine_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s engine %(name)s: %(message)s")
    settings = Settings()
    config = uvicorn.Config(
        create_engine_app(settings), uds=socket_path, log_level=log_level, access_log=False,
        loop="uvloop", http="httptools", lifespan="on",
    )  # fmt: skip
    uvicorn.Server(config).run()


class EngineProcess:
    """The one process holding the local model; ``keep_alive()`` restarts it when it has died."""

    def __init__(self, socket_path: str, log_level: str) -> None:
        self.socket_path = socket_path
        self.log_level = log_level
        self._process: BaseProcess | None = None
        self._started_at = 0.0
        self._failures = 0
        self._restart_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        # spawn, not fork: llama.cpp's threads and the parent's state must not be copied half-way.
        process = get_context("spawn").Process(
            target=run_engine, args=(self.socket_path, self.log_level), name="upcoach-engine", daemon=False
        )
        process.start()
        self._process, self._started_at, self._restart_at = process, time.monotonic(), None
        log.info("engine process [%s] started on %s", process.pid, self.socket_path)

    def keep_alive(self) -> None:
        process = self._process
        if process is None or process.is_alive():
            if self._restart_at is not None and time.monotonic() >= self._restart_at:
                self.start()
            return
        process.join()
        now = time.monotonic()
        self._failures = 0 if now - self._started_at >= ENGINE_STABLE_SECONDS else self._failures + 1
        pause = ENGINE_RESTART_PAUSES[min(self._failures, len(ENGINE_RESTART_PAUSES) - 1)]
        log.error("engine process [%s] died (exit code %s); restarting in %.1f s", process.pid, process.exitcode, pause)
        self._process, self._restart_at = None, now + pause

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or not process.is_alive():
            return
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        process.join(ENGINE_STOP_SECONDS)
        if process.is_alive():
            process.kill()
            process.join()


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor plus the engine process (None when no local model is loaded), and the metrics
    files of workers that were replaced (observability/metrics.py)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket], engine: EngineProcess | None) -> None:
        super().__init__(config, sockets)
        self.engine = engine

    def init_processes(self) -> None:
        if self.engine is not None:
            self.engine.start()
        super().init_processes()

    def keep_subprocess_alive(self) -> None:
        before = self._worker_pids()
        super().keep_subprocess_alive()
        self._forget_metrics(before)
        if self.engine is not None and not self.should_exit.is_set():
            self.engine.keep_alive()

    def restart_all(self) -> None:
        before = self._worker_pids()
        super().restart_all()
        self._forget_metrics(before)

    def _worker_pids(self) -> set[int]:
        return {process.pid for process in self.processes if process.pid is not None}

    def _forget_metrics(self, before: set[int]) -> None:
        """A replaced worker's live gauges leave the scrape; its counters stay (what it counted happened)."""
        if not os.environ.get(MULTIPROC_DIR_ENV):
            return
        from prometheus_client import multiprocess

        for pid in before - self._worker_pids():
            multiprocess.mark_process_dead(pid)

    def join_all(self) -> None:
        super().join_all()
        # Last: the workers have finished their requests, some of which were waiting on the model.
        if self.engine is not None:
            self.engine.stop()


def serve_workers(settings: Settings, *, log_level: str, log_format: str, tls_min_version: str) -> None:
    """Run ``settings.workers`` API workers on one port, and the engine process if the local model is on."""
    engine: EngineProcess | None = None
    runtime = Path(tempfile.mkdtemp(prefix="upcoach-"))  # 0700: only this user can reach the engine
    if settings.load_model and not (settings.pool_urls and settings.pool_role == "local"):
        engine = EngineProcess(str(runtime / "engine.sock"), log_level)
        # Workers are started with spawn and read their settings from the environment, as uvicorn's factory does.
        os.environ["UPCOACH_ENGINE_SOCKET"] = engine.socket_path
    os.environ["UPCOACH_LOG_LEVEL"], os.environ["UPCOACH_LOG_FORMAT"] = log_level, log_format  # for worker_app
    # Before any worker starts: prometheus_client picks its storage when a process first imports it. A fresh
    # folder per run, so no counts of an earlier run are added in (observability/metrics.py).
    metrics_dir = runtime / "metrics"
    metrics_dir.mkdir()
    os.environ[MULTIPROC_DIR_ENV] = str(metrics_dir)
    for name, value in {"HOST": settings.host, "PORT": settings.port, "LOCAL_MODEL": settings.local_model,
                        "WORKERS": settings.workers, "DATA_DIR": settings.data_dir}.items():  # fmt: skip
        os.environ[f"UPCOACH_{name}"] = str(value)
    for name, path in {"TLS_CERTFILE": settings.tls_certfile, "TLS_KEYFILE": settings.tls_keyfile}.items():
        if path is not None:
            os.environ[f"UPCOACH_{name}"] = str(path)
    config = ServeConfig(
        "upcoach.workers:worker_app", factory=True, workers=settings.workers, tls_min_version=tls_min_version,
        # A worker answers uvicorn's pings from its first moment, but a spawned interpreter importing the app on a
        # busy machine can take longer than uvicorn's 5 s default, and would be killed as hung before it started.
        timeout_worker_healthcheck=WORKER_PING_SECONDS, **uvicorn_options(settings, log_level),
    )  # fmt: skip
    sock = config.bind_socket()
    try:
        Supervisor(config, [sock], engine).run()
    finally:
        sock.close()
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(runtime, ignore_errors=True)
