"""The SDK's pure parts, table-driven: the adaptive controller, Retry-After and backoff, SSE framing, the encrypted
store (key outside the file, ciphertext bound to its row) and the local-DP usage counts."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import httpx
import pytest

from upcoach_client import RouteAdvice, errors
from upcoach_client.device import DeviceState, LocalStore, decide, load_or_create_key
from upcoach_client.device.sync import laplace
from upcoach_client.retry import RetryPolicy, repeatable, retry_after
from upcoach_client.sse import events

READY = DeviceState(battery_level=80, model_ready=True)
ON_DEVICE = RouteAdvice("local", True, ["simple request: local"], ["device can run it"])
TO_SERVER = RouteAdvice("cloud", False, ["complex request: cloud"], [])

CASES = [
    # (state, privacy, advice, target, a reason that must be given)
    (DeviceState(network="offline", model_ready=True), "private", None, "device", "offline: no server reachable"),
    (DeviceState(network="offline"), "private", None, "later", "no verified on-device model loaded"),
    (DeviceState(network="offline", model_ready=True, thermal="critical"), "private", None, "later", "thermal"),
    (DeviceState(battery_level=12, model_ready=True), "private", ON_DEVICE, "server", "battery 12% < 20%"),
    (DeviceState(battery_level=12, charging=True, model_ready=True), "private", ON_DEVICE, "device", "server advice"),
    (DeviceState(thermal="serious", model_ready=True), "sensitive", None, "server", "thermal state serious"),
    (READY, "sensitive", TO_SERVER, "device", "sensitive request: it stays on the phone"),
    (READY, "private", TO_SERVER, "server", "complex request: cloud"),
    (READY, "private", ON_DEVICE, "device", "device can run it"),
    (DeviceState(network="metered", model_ready=True), "public", None, "device", "metered network"),
    (READY, "public", None, "device", "on-device model ready"),
    (DeviceState(), "public", None, "server", "no verified on-device model loaded"),
]


@pytest.mark.parametrize(("state", "privacy", "advice", "target", "reason"), CASES)
def test_controller(state: DeviceState, privacy: str, advice: RouteAdvice | None, target: str, reason: str) -> None:
    choice = decide(state, privacy, advice)  # type: ignore[arg-type]
    assert choice.target == target
    assert any(reason in r for r in choice.reasons), choice.reasons


def _response(headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(429, headers=headers)


def test_retry_after_and_backoff() -> None:
    assert retry_after(_response({"Retry-After": "7"})) == 7
    assert retry_after(_response({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0  # a date in the past
    assert retry_after(_response({"Retry-After": "soon"})) is None
    assert retry_after(_response({})) is None
    policy = RetryPolicy(attempts=3, base_delay=1, max_delay=4, max_retry_after=60)
    assert policy.delay(1, 7) == 7 and policy.delay(1, 61) is None and policy.delay(3, 1) is None
    assert all(0 <= policy.delay(2, None) <= 2 for _ in range(100))  # type: ignore[operator]
    get = httpx.Request("GET", "http://x/")
    post = httpx.Request("POST", "http://x/")
    keyed = httpx.Request("POST", "http://x/", headers={"Idempotency-Key": "k"})
    assert repeatable(get) and repeatable(keyed) and not repeatable(post)


def test_sse_frames() -> None:
    lines = [
        "event: token",
        'data: {"content": "Hi"}',
        "",
        ": keep-alive",
        "",
        "event: done",
        "data: {",
        'data: "a": 1}',
    ]
    parsed = list(events(iter(lines)))
    assert [(e.event, e.data) for e in parsed] == [("token", {"content": "Hi"}), ("done", {"a": 1})]


def test_store_is_encrypted_with_a_key_outside_the_file(tmp_path: Path) -> None:
    key_path = tmp_path / "keystore" / "store.key"
    key = load_or_create_key(key_path)
    assert load_or_create_key(key_path) == key and oct(key_path.stat().st_mode & 0o777) == "0o600"
    store = LocalStore(tmp_path / "app" / "upcoach.db", key)
    first = store.add("journal", {"transcript": "a very private sentence"})
    second = store.add("journal", {"transcript": "another one"})
    store.put("cursor", "abc")
    assert [i.data["transcript"] for i in store.items()] == ["a very private sentence", "another one"]
    assert store.get("cursor") == "abc"
    store.close()
    assert b"private sentence" not in (tmp_path / "app" / "upcoach.db").read_bytes()
    with pytest.raises(errors.VerificationFailed):
        LocalStore(tmp_path / "app" / "upcoach.db", bytes(32)).items()
    # A ciphertext moved to another row does not decrypt there.
    db = sqlite3.connect(tmp_path / "app" / "upcoach.db")
    payload = db.execute("SELECT payload FROM outbox WHERE client_id = ?", (first,)).fetchone()[0]
    db.execute("UPDATE outbox SET payload = ? WHERE client_id = ?", (payload, second))
    db.commit()
    db.close()
    with pytest.raises(errors.VerificationFailed):
        LocalStore(tmp_path / "app" / "upcoach.db", key).items()


def test_laplace_noise_is_centred_with_the_right_spread() -> None:
    rng = random.Random(7)
    draws = [laplace(1.0, rng) for _ in range(20_000)]
    mean = sum(draws) / len(draws)
    mean_abs = sum(abs(d) for d in draws) / len(draws)  # E|X| = scale for Laplace(0, scale)
    assert abs(mean) < 0.05 and 0.95 < mean_abs < 1.05
