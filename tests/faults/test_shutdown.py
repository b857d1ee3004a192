"""SIGTERM on a real `upcoach serve` (one process, and two workers): streams that finish within
UPCOACH_SHUTDOWN_GRACE finish whole; one still running at the deadline ends with an SSE error event
``shutting_down`` and a proper end of stream (the openai SDK raises APIError, not a connection error); the process
exits 0, the cut request has its record, and the audit chain verifies."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import LiveServer
from tests.fakes.fault_server import SLOW_STREAM_WORDS, FaultServer
from tests.faults.harness import audit_verifies, missing_records, peer_env, serve, settings_for

REDIS_URL = "redis://127.0.0.1:6379/13"  # this module's own database on the machine's Redis (read-write only)
EXIT_WAIT = 60


def _stream(server: LiveServer) -> openai.Stream:  # type: ignore[type-arg]
    # Retries as the SDK does by default: a pooled connection to the peer can be closing just when it is reused
    # (a 502 from the pool, docs/reliability.md "known limits"), which is not what this test is about.
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=2, timeout=120)
    # "default" pins the local side as it is: the answer checks of the coaching layer would cut "word0 word1 ...".
    return client.chat.completions.create(
        model="default", stream=True, messages=[{"role": "user", "content": "How do I keep a morning routine?"}]
    )


def _start(tmp: Path, peer: FaultServer, delay: float, grace: float, workers: int) -> tuple[LiveServer, dict]:
    env = {**peer_env(peer.url, peer.url, local_model=f"slow-stream@{delay}"), "UPCOACH_SHUTDOWN_GRACE": str(grace)}
    if workers > 1:
        redis.Redis.from_url(REDIS_URL).flushdb()
        env["UPCOACH_REDIS_URL"] = REDIS_URL
    server = serve(tmp, env, ["--workers", str(workers)] if workers > 1 else None)
    return server, {**os.environ, "UPCOACH_DATA_DIR": str(tmp / "data"), **env}


def _refused_or_unready(server: LiveServer) -> bool:
    """Right after the signal the instance takes no new work: its port is closed, or /readyz says 503."""
    try:
        return httpx.get(server.base_url + "/readyz", timeout=5).status_code == 503
    except httpx.TransportError:
        return True


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stream_running_at_the_deadline_ends_with_a_shutting_down_event(tmp_path: Path, workers: int) -> None:
    with FaultServer() as peer:
        # 100 words, one every 0.5 s: 50 s, far past the 2 s grace.
        server, env = _start(tmp_path, peer, delay=0.5, grace=2, workers=workers)
        try:
            stream = _stream(server)
            first = next(iter(stream))
            server.process.send_signal(signal.SIGTERM)
            received = [first]
            with pytest.raises(openai.APIError) as raised:
                for chunk in stream:
                    received.append(chunk)
            assert raised.value.code == "shutting_down"  # an SSE error event, not a cut connection
            assert len(received) < SLOW_STREAM_WORDS
            assert _refused_or_unready(server)
            assert server.process.wait(timeout=EXIT_WAIT) == 0, server.log()
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()
    assert asyncio.run(missing_records(settings_for(env).effective_database_url, [first.id])) == []
    assert audit_verifies(env)


def test_streams_that_finish_within_the_grace_finish_whole(tmp_path: Path) -> None:
    with FaultServer() as peer:
        # 100 words, one every 0.03 s: about 3 s, well inside the 60 s grace.
        server, env = _start(tmp_path, peer, delay=0.03, grace=60, workers=1)
        try:
            stream = _stream(server)
            chunks = [next(iter(stream))]
            signalled = threading.Timer(0.3, server.process.send_signal, (signal.SIGTERM,))
            signalled.start()
            chunks += list(stream)
            signalled.join()
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text.split() == [f"word{i}" for i in range(SLOW_STREAM_WORDS)]
            assert any(c.choices and c.choices[0].finish_reason for c in chunks)
            assert server.process.wait(timeout=EXIT_WAIT) == 0, server.log()
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()
    assert asyncio.run(missing_records(settings_for(env).effective_database_url, [chunks[0].id])) == []
    assert audit_verifies(env)
