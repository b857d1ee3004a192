"""A simulated phone (the SDK) against a live `upcoach serve`, through a loopback TCP proxy the test cuts and heals.

One phone's day: it registers, downloads the model (the download is cut part way and resumes), verifies and loads
it, takes the signed strategies bundle; the network drops, it answers locally and from the library and fills its
encrypted outbox; the network returns, but the answer to its first sync is lost after the server acted; the retry
delivers every item exactly once, and a replay creates nothing. Tampered models, manifests and bundles are refused
on the phone, and a revoked phone is refused by the server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_privacy_api import create_keys
from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server
from tests.fakes.tcp_proxy import TcpProxy
from upcoach.modelstore.catalog import DEFAULT_MODEL
from upcoach.security.keys import Role
from upcoach_client import Client, DeviceProfile, errors
from upcoach_client.device import (
    DeviceState,
    Downloaded,
    LocalModel,
    LocalStore,
    Phone,
    StrategiesCache,
    Syncer,
    download_model,
    load_or_create_key,
    verify_manifest,
)
from upcoach_client.device.phone import LIBRARY_NOTE
from upcoach_client.retry import RetryPolicy

PROFILE = DeviceProfile(ram_mb=8192, model="Pixel 8", battery_level=80, capabilities=("local-llm", "npu"))
MODEL_ID = f"{DEFAULT_MODEL}@1"
FAST = RetryPolicy(attempts=3, base_delay=0.1, max_delay=0.5)
QUESTION = [{"role": "user", "content": "I can't fall asleep before exams. What can I do tonight?"}]


@dataclass
class World:
    server: LiveServer
    proxy: TcpProxy
    keys: dict[str, str]
    tmp: Path

    def api(self, key: str) -> Client:
        return Client(self.proxy.url, key, retry=FAST, timeout=httpx.Timeout(120.0, connect=2.0))

    def journal_count(self) -> int:
        response = httpx.get(self.server.base_url + "/api/journal/entries", params={"limit": 100}, timeout=30,
                             headers={"Authorization": f"Bearer {self.keys['alice']}"})  # fmt: skip
        assert response.status_code == 200, response.text
        return len(response.json()["data"])


@dataclass
class Handset:
    api: Client
    device_id: str
    model_key: bytes
    bundle_key: bytes
    store: LocalStore
    strategies: StrategiesCache
    downloaded: Downloaded
    resumed_from: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("phone")
    data_dir = data_dir_with_model(tmp, model_path)
    env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "upcoach.cli", "models", "import", str(model_path), "--name", DEFAULT_MODEL,
               "--version", "1"]  # fmt: skip
    imported = subprocess.run(command, env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    keys = asyncio.run(create_keys(data_dir, {"alice": Role.user}))
    # The server runs no model itself: the phone does. Its artifact endpoint serves the imported version.
    server = start_server(tmp, {"UPCOACH_AUTH": "on", "UPCOACH_LOAD_MODEL": "false",
                                "UPCOACH_RATE_LIMIT_BURST": "100000"}, wait_for="/healthz")  # fmt: skip
    proxy = TcpProxy(int(server.base_url.rsplit(":", 1)[1]))
    yield World(server, proxy, keys, tmp)
    proxy.close()
    stop_server(server)


@pytest.fixture(scope="module")
def handset(world: World) -> Iterator[Handset]:
    with world.api(world.keys["alice"]) as owner:
        registration = owner.register_device(model="Pixel 8", os="Android 15", capabilities=["local-llm", "npu"],
                                             ram_mb=8192)  # fmt: skip
    api = world.api(registration.api_key)
    model_key = api.signing_key().raw
    bundle_key = base64.b64decode(api.bundle_signing_key()["publicKey"])
    phone_dir = world.tmp / "phone"
    store = LocalStore(phone_dir / "upcoach.db", load_or_create_key(world.tmp / "keystore" / "store.key"))
    recommendation = api.recommend(PROFILE)
    assert recommendation.on_device and recommendation.installed_id == MODEL_ID
    # The download is cut after 64 MB; the partial file stays, and the next call resumes from it.
    world.proxy.cut_after(64 << 20)
    with pytest.raises(errors.ConnectionFailed):
        download_model(api, MODEL_ID, phone_dir / "models", model_key)
    part = phone_dir / "models" / f"{DEFAULT_MODEL}-1.gguf.part"
    held = part.stat().st_size
    assert 0 < held <= 64 << 20
    world.proxy.heal()
    downloaded = download_model(api, MODEL_ID, phone_dir / "models", model_key)
    yield Handset(api, registration.device.id, model_key, bundle_key, store, StrategiesCache(store, bundle_key),
                  downloaded, held)  # fmt: skip
    api.close()
    store.close()


def test_download_resumes_where_it_was_cut(handset: Handset) -> None:
    got = handset.downloaded
    assert got.resumed_from == handset.resumed_from > 0
    assert got.resumed_from + got.fetched == got.manifest.size == got.path.stat().st_size
    assert not got.path.with_suffix(".gguf.part").exists()


def test_offline_then_sync_exactly_once(world: World, handset: Handset) -> None:
    # One thread: on a shared CI machine ggml's spinning worker threads slow each other down more than they help.
    model = LocalModel.load(handset.downloaded.path, handset.downloaded.manifest, handset.model_key, threads=1)
    print(f"on-device model load: {model.load_seconds:.2f} s (gate {30} s)")
    assert model.load_seconds > 0
    phone = Phone(handset.api, handset.store, handset.strategies, profile=PROFILE, model=model)
    syncer = Syncer(handset.api, handset.store, handset.strategies)
    first = syncer.sync()
    assert first.bundle_version is not None and handset.strategies.version == first.bundle_version
    # The phone has not reported a model version yet: the server offers the one its hardware should run.
    assert first.model_update is not None and first.model_update["modelId"] == MODEL_ID
    before = world.journal_count()

    world.proxy.cut()
    local = phone.answer(QUESTION, DeviceState(battery_level=80), privacy_level="private", max_tokens=8)
    assert local.answered_by == "device" and local.text and "offline: no server reachable" in local.reasons
    hot = phone.answer(QUESTION, DeviceState(battery_level=80, thermal="critical"), max_tokens=8)
    assert hot.answered_by == "library" and hot.text.endswith(LIBRARY_NOTE)
    assert any("thermal state critical" in reason for reason in hot.reasons)
    journal_ids = [
        phone.journal("Exam week. Slept five hours but went for a run.", "2026-12-01T07:30:00+01:00", mood=3),
        phone.journal("Studied with a friend; felt calmer.", "2026-12-01T21:00:00+01:00", mood=4),
    ]
    rating_id = phone.rate("req_never_served_here", 5)
    with pytest.raises(errors.ConnectionFailed):
        syncer.sync()
    assert {i.client_id for i in handset.store.items(kinds=("journal", "rating"))} == {*journal_ids, rating_id}
    raw = (handset.store.path).read_bytes()
    assert b"Slept five hours" not in raw and b"fall asleep" not in raw  # encrypted at rest

    # Back online, but the answer to the first delivery is lost after the server applied it.
    world.proxy.heal()
    world.proxy.cut_after(0)
    with pytest.raises(errors.ConnectionFailed):
        syncer.sync(model_version=MODEL_ID)
    assert world.journal_count() == before + 2
    world.proxy.heal()
    report = syncer.sync(model_version=MODEL_ID)
    assert report.accepted == 3 and report.duplicate == 0  # the stored answer of the first delivery, replayed
    assert [cid for cid, _ in report.rejected] == [rating_id]
    assert report.model_update is None  # it reported the version it runs: nothing more to offer
    assert world.journal_count() == before + 2
    assert handset.store.items() == []
    delivered = handset.store.items(state="delivered")
    assert {i.kind for i in delivered} == {"journal", "usage"}
    usage = next(i for i in delivered if i.kind == "usage")
    assert set(usage.data) == {"day", "localGenerations", "libraryAnswers", "epsilon"}  # counts, never text

    # A replay of everything delivered, under a new Idempotency-Key: every item is a duplicate, nothing is created.
    replay = handset.api.sync([i.wire() for i in delivered])
    assert replay.duplicate == len(delivered) and replay.accepted == 0
    assert world.journal_count() == before + 2
    model.close()


def test_tampering_is_refused_on_the_phone(world: World, handset: Handset) -> None:
    manifest = handset.downloaded.manifest
    forged = dataclasses.replace(manifest, size=manifest.size + 1)
    with pytest.raises(errors.VerificationFailed, match="bad signature"):
        verify_manifest(forged, handset.model_key)
    tampered = world.tmp / "tampered.gguf"
    data = bytearray(handset.downloaded.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(errors.VerificationFailed, match="sha256"):
        LocalModel.load(tampered, manifest, handset.model_key)
    bundle: dict[str, Any] = handset.api.strategies_bundle()
    bundle["strategies"][0]["title"] = "Stop taking your medication"
    fresh = StrategiesCache(LocalStore(world.tmp / "fresh.db", os.urandom(32)), handset.bundle_key)
    with pytest.raises(errors.VerificationFailed):
        fresh.apply(bundle)
    assert fresh.version is None and fresh.answer("sleep") is None


def test_revoked_phone_is_refused(world: World, handset: Handset) -> None:
    with world.api(world.keys["alice"]) as owner:
        assert owner.revoke_device(handset.device_id).revoked
    with pytest.raises(errors.Unauthorized):
        handset.api.changes()
    with pytest.raises(errors.Unauthorized):
        Syncer(handset.api, handset.store).sync()
    with world.api(world.keys["alice"]) as owner:
        assert owner.changes().cursor  # the owner's own key still works
