"""Queueing, cancellation, prefix reuse and unavailability, observed from outside through HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import COACH_SYSTEM_PROMPT, LiveServer, model_server, start_server, stop_server


def local_status(server: LiveServer) -> dict[str, object]:
    return httpx.get(server.base_url + "/readyz", timeout=10).json()["local"]


def after_cancel(server: LiveServer, cancelled_before: object, within: float) -> dict[str, object]:
    """The engine's status once nothing is in flight and a sequence more was cancelled (or ``within`` s passed)."""
    deadline = time.monotonic() + within
    status = local_status(server)
    while time.monotonic() < deadline and (status["queue_depth"] != 0 or status["cancelled"] == cancelled_before):
        time.sleep(0.05)
        status = local_status(server)
    return status


def chat(server: LiveServer, system: str, user: str, **extra: object) -> dict[str, object]:
    response = httpx.post(server.v1 + "/chat/completions", timeout=120, json={
        "model": "default", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}], **extra,
    })  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def test_new_conversation_reuses_a_saved_system_prompt_after_other_traffic(live_server: LiveServer) -> None:
    other_system = "You are a terse assistant for a bakery. " * 12
    first = chat(live_server, COACH_SYSTEM_PROMPT, "I want to run a 5k.")
    chat(live_server, other_system, "Do you sell rye bread?")  # evicts the coach prompt from the live context
    again = chat(live_server, COACH_SYSTEM_PROMPT, "How do I stop procrastinating?")
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    # The caller's system prompt in tokens (the prompt also holds the user turn and any library material, which
    # differ between the two conversations and cannot be reused).
    tokenized = httpx.post(live_server.base_url + "/tokenize", json={"content": COACH_SYSTEM_PROMPT}, timeout=30)
    system_tokens = len(tokenized.json()["tokens"])
    assert cached >= system_tokens, (cached, system_tokens, first["usage"])
    assert local_status(live_server)["prefix_cache_entries"] >= 2


def test_client_disconnect_stops_generation(live_server: LiveServer) -> None:
    before = local_status(live_server)["cancelled"]
    with httpx.stream("POST", live_server.v1 + "/chat/completions", timeout=60, json={
        "model": "default", "max_tokens": 1500, "stream": True,
        "messages": [{"role": "user", "content": "Write a very long essay about habits."}],
    }) as response:  # fmt: skip
        received = 0
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received >= 5:
                break  # leaving the block closes the connection mid-stream
    status = after_cancel(live_server, before, within=10)
    assert status["cancelled"] == before + 1
    assert status["queue_depth"] == 0
    # 1500 tokens would take >20 s: the slot is free long before that, and the server answers at once.
    assert chat(live_server, "Be brief.", "Hi")["choices"][0]["message"]["content"] is not None


@pytest.fixture(scope="module")
def single_slot_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[LiveServer]:
    single_slot = {"UPCOACH_QUEUE_DEPTH": "0", "UPCOACH_PARALLEL": "1"}
    with model_server(tmp_path_factory, model_path, "single-slot", single_slot) as server:
        yield server


def test_full_queue_answers_429_with_retry_after(single_slot_server: LiveServer) -> None:
    server = single_slot_server
    with httpx.stream("POST", server.v1 + "/chat/completions", timeout=60, json={
        "model": "default", "max_tokens": 400, "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }) as running:  # fmt: skip
        lines = running.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        blocked = httpx.post(server.v1 + "/chat/completions", timeout=30, json={
            "model": "default", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
        assert blocked.json()["error"]["code"] == "queue_full"
    # After the first stream is gone, the slot frees and requests succeed again.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and local_status(server)["queue_depth"] != 0:
        time.sleep(0.05)
    assert chat(server, "Be brief.", "Hello")["usage"]["completion_tokens"] > 0


def test_without_a_model_chat_is_503_and_not_ready(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"UPCOACH_LOAD_MODEL": "false"}, wait_for="/healthz")
    try:
        response = httpx.post(server.v1 + "/chat/completions", json={
            "model": "default", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert response.status_code == 503 and response.json()["error"]["code"] == "local_unavailable"
        ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 503 and ready.json()["reasons"]
    finally:
        stop_server(server)


def test_corrupt_model_file_keeps_server_up_and_unready(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 4096)
    server = start_server(tmp_path, {"UPCOACH_LOCAL_MODEL": str(bad)}, wait_for="/healthz")
    try:
        deadline = time.monotonic() + 30
        ready = httpx.get(server.base_url + "/readyz")
        while time.monotonic() < deadline and "failed to load" not in ready.text:
            time.sleep(0.1)
            ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 503 and "failed to load" in ready.text
        assert httpx.get(server.base_url + "/healthz").status_code == 200
    finally:
        stop_server(server)


def test_client_disconnect_stops_a_non_streamed_generation(live_server: LiveServer) -> None:
    """No write fails for a non-streamed answer: the server notices the closed connection itself
    (api/disconnect.py) and the sequence is cancelled instead of generating 1500 tokens for nobody."""
    before = local_status(live_server)["cancelled"]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(live_server.v1 + "/chat/completions", timeout=httpx.Timeout(60, read=3), json={
            "model": "default", "max_tokens": 1500,
            "messages": [{"role": "user", "content": "Write a very long essay about habits."}],
        })  # fmt: skip
    status = after_cancel(live_server, before, within=60)
    assert status["cancelled"] == before + 1
    assert status["queue_depth"] == 0
