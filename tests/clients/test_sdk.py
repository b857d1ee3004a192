"""The Python SDK against a live `upcoach serve` on loopback (auth on): typed answers, errors as the exceptions
named after the API's codes, SSE streaming, retries that honour Retry-After, and the same through AsyncClient."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Iterator

import pytest

import upcoach.errors as server_errors
from tests.api.test_privacy_api import create_keys
from tests.conftest import LiveServer, start_server, stop_server
from upcoach.security.keys import Role
from upcoach_client import AsyncClient, Client, DeviceProfile, RetryPolicy, errors
from upcoach_client.retry import NO_RETRY

PHONE = DeviceProfile(ram_mb=8192, model="Pixel 8", battery_level=80, capabilities=("local-llm", "npu"))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("sdk")
    keys = asyncio.run(create_keys(tmp / "data", {"alice": Role.user, "root": Role.admin}))
    # No model and no cloud: chat answers come from the strategies library (streamed too), no model load needed.
    server = start_server(tmp, {"UPCOACH_AUTH": "on", "UPCOACH_LOAD_MODEL": "false",
                                "UPCOACH_RATE_LIMIT_BURST": "1000"}, wait_for="/healthz")  # fmt: skip
    yield server, keys
    stop_server(server)


def test_every_server_error_code_has_its_exception() -> None:
    codes = {
        cls.code
        for _, cls in inspect.getmembers(server_errors, inspect.isclass)
        if issubclass(cls, server_errors.UpcoachError) and cls is not server_errors.UpcoachError
    }
    missing = sorted(code for code in codes if code not in errors.ERRORS)
    assert not missing, f"SDK has no exception for {missing}"
    assert errors.error_for(429, {"error": {"code": "queue_full", "message": "m"}}).__class__ is errors.QueueFull
    assert isinstance(errors.error_for(429, {"error": {"code": "queue_full"}}), errors.RateLimited)
    # An unknown code falls back to the class of its status, so an old app still handles a newer server.
    assert type(errors.error_for(409, {"error": {"code": "brand_new"}})) is errors.Conflict


def test_typed_answers_and_errors(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    with Client(server.base_url, keys["alice"]) as api:
        rec = api.recommend(PHONE)
        assert rec.tier == "flagship" and rec.runtime_reported is True and rec.accelerators == ["npu"]
        no_runtime = api.recommend(DeviceProfile(ram_mb=8192, capabilities=("npu",)))
        assert no_runtime.tier == "flagship" and no_runtime.on_device is False
        with pytest.raises(errors.InvalidRequest) as bad:
            api.recommend(DeviceProfile(ram_mb=8192, capabilities=("telepathy",)))  # type: ignore[arg-type]
        assert bad.value.status == 400 and bad.value.param == "capabilities"
        registered = api.register_device(model="Pixel 8", os="Android 15", capabilities=["local-llm"], ram_mb=8192)
        assert registered.device.model == "Pixel 8" and registered.api_key.startswith("uc_")
        assert [d.id for d in api.devices()] == [registered.device.id]
        entry = api.journal_entry("Went for a walk at lunch.", "2026-12-01T12:00:00Z", mood=4, idempotency_key="k1")
        again = api.journal_entry("Went for a walk at lunch.", "2026-12-01T12:00:00Z", mood=4, idempotency_key="k1")
        assert again["id"] == entry["id"]
        with pytest.raises(errors.IdempotencyKeyReused):
            api.journal_entry("Something else.", "2026-12-01T12:00:00Z", idempotency_key="k1")
        with pytest.raises(errors.NotFound):
            api.revoke_device(uuid.uuid4().hex)
    with Client(server.base_url, "uc_0000000000000000_" + "x" * 43) as stranger, pytest.raises(errors.Unauthorized):
        stranger.devices()


def test_stream_yields_tokens_then_done(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    with Client(server.base_url, keys["alice"]) as api:
        events = list(api.stream([{"role": "user", "content": "I keep procrastinating on my thesis"}]))
    assert [e.event for e in events][-1] == "done" and events[0].event == "token"
    text = "".join(e.data["content"] for e in events if e.event == "token")
    assert text and events[-1].data["response"]["content"] == text


async def test_async_client(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    async with AsyncClient(server.base_url, keys["alice"]) as api:
        rec = await api.recommend(PHONE)
        assert rec.model_id is not None
        bundle = await api.strategies_bundle()
        assert bundle["full"] is True and (await api.bundle_signing_key())["keyId"] == bundle["keyId"]
        events = [e async for e in api.stream([{"role": "user", "content": "How can I sleep better?"}])]
        assert events[-1].event == "done"
        item = {"clientId": "a-1", "kind": "journal",
                "data": {"transcript": "Async entry.", "recordedAt": "2026-12-01T09:00:00Z"}}  # fmt: skip
        result = await api.sync([item])
        assert result.accepted == 1 and result.results[0].status == "accepted"
        replay = await api.sync([item])
        assert replay.duplicate == 1
        with pytest.raises(errors.InvalidRequest):
            await api.changes("not-a-cursor")


def test_retries_honour_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real rate limit (burst 2, one token a second): the SDK waits what Retry-After says and gets through."""
    tmp = tmp_path_factory.mktemp("sdk-limits")
    keys = asyncio.run(create_keys(tmp / "data", {"alice": Role.user}))
    server = start_server(tmp, {"UPCOACH_AUTH": "on", "UPCOACH_LOAD_MODEL": "false",
                                "UPCOACH_RATE_LIMIT_BURST": "2", "UPCOACH_RATE_LIMIT_PER_MINUTE": "60"},
                          wait_for="/healthz")  # fmt: skip
    try:
        with Client(server.base_url, keys["alice"], retry=NO_RETRY) as impatient:
            with pytest.raises(errors.RateLimited) as limited:
                for _ in range(5):
                    impatient.recommend(PHONE)
            assert limited.value.status == 429 and limited.value.retry_after is not None
            assert limited.value.retry_after >= 1
        with Client(server.base_url, keys["alice"], retry=RetryPolicy(attempts=5)) as patient:
            assert all(patient.recommend(PHONE).model_id for _ in range(4))
    finally:
        stop_server(server)
