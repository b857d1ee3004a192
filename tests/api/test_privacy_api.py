"""/api/privacy over HTTP with authentication on: settings, export, erasure, and the router obeying the settings.

Most tests run a server without the model: its local side is a FaultServer pool and its clouds (legacy, eu, us)
are FaultServers that record every request, so a test can prove that nothing reached a cloud. One test runs the
real model to show a local_only user's complex request answered locally although the cloud would be chosen.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, model_server, start_server, stop_server
from tests.fakes.fault_server import FaultServer
from upcoach.config import Settings
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRecord, RequestRepository

COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
HEALTH = (
    "I was diagnosed with depression and take sertraline. Compare CBT and ACT and build me a detailed "
    "12-week plan with weekly milestones."
)
PEERS = ("local", "cloud", "eu", "us")


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "upcoach.cli", *args], env=env, capture_output=True, text=True)


class Env:
    def __init__(self, server: LiveServer, keys: dict[str, str], peers: dict[str, FaultServer], data_dir: Path):
        self.server, self.keys, self.peers, self.data_dir = server, keys, peers, data_dir

    def call(self, method: str, path: str, who: str, as_user: str | None = None, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        if as_user is not None:
            headers["X-User-Id"] = as_user
        return httpx.request(method, self.server.base_url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]

    def process(self, who: str, text: str, as_user: str | None = None, privacy: str = "public") -> dict[str, object]:
        body = {"messages": [{"role": "user", "content": text}], "maxTokens": 8,
                "routingHints": {"privacyLevel": privacy, "preferLocal": False}}  # fmt: skip
        response = self.call("POST", "/api/ai/hybrid/process", who, as_user, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def received(self) -> dict[str, int]:
        return {name: len(peer.requests) for name, peer in self.peers.items()}

    def clear(self) -> None:
        for peer in self.peers.values():
            peer.clear()


async def create_keys(data_dir: Path, users: dict[str, Role]) -> dict[str, str]:
    """API keys made in process, as `upcoach keys create` makes them (one subprocess per key is slow)."""
    settings = Settings(data_dir=data_dir)
    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        key = audit_key_from_settings(settings)
        assert key is not None
        keys = ApiKeys(ApiKeyRepository(db), AuditLog(AuditRepository(db), key))
        return {user: (await keys.create(user, role)).token for user, role in users.items()}
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    peers = {name: FaultServer() for name in PEERS}
    for peer in peers.values():
        peer.__enter__()
    tmp = tmp_path_factory.mktemp("privacy-api")
    data_dir = tmp / "data"
    keys = asyncio.run(create_keys(data_dir, {"alice": Role.user, "bob": Role.user, "root": Role.admin}))
    regions = {name: {"base_url": peers[name].url, "model": "ok", "api_key": "k"} for name in ("eu", "us")}
    server = start_server(tmp, {
        "UPCOACH_AUTH": "on",
        "UPCOACH_LOAD_MODEL": "false",
        "UPCOACH_POOL_URLS": peers["local"].url,
        "UPCOACH_POOL_ROLE": "local",
        "UPCOACH_POOL_MODEL": "ok",
        "UPCOACH_CLOUD_BASE_URL": peers["cloud"].url,
        "UPCOACH_CLOUD_MODEL": "ok",
        "UPCOACH_CLOUD_REGIONS": json.dumps(regions),
        "UPCOACH_RATE_LIMIT_BURST": "500",
    })  # fmt: skip
    try:
        yield Env(server, keys, peers, data_dir)
    finally:
        stop_server(server)
        for peer in peers.values():
            peer.__exit__(None, None, None)


def route(env: Env, user: str) -> dict[str, object]:
    body = {"messages": [{"role": "user", "content": COMPLEX}], "routingHints": {"privacyLevel": "public"}}
    response = env.call("POST", "/api/ai/hybrid/route", "root", user, json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def put(env: Env, who: str, body: dict[str, object], as_user: str | None = None, **headers: str) -> httpx.Response:
    return env.call("PUT", "/api/privacy/settings", who, as_user, json=body, headers=headers)


def test_settings_defaults_then_versioned_updates_with_conflicts(env: Env) -> None:
    response = env.call("GET", "/api/privacy/settings", "alice")
    assert response.status_code == 200 and response.headers["etag"] == '"0"'
    assert response.json() == {
        "processingMode": "hybrid", "specialCategoryCloudOptIn": False, "region": None, "retentionDays": 365,
        "analyticsOptIn": False, "doNotShare": False, "version": 0, "updatedAt": None,
        "availableRegions": ["eu", "us"], "notices": [],
    }  # fmt: skip
    first = put(env, "alice", {"analyticsOptIn": True, "retentionDays": 30, "version": 0})
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["retentionDays"], first.json()["analyticsOptIn"]) == (1, 30, True)
    assert first.json()["updatedAt"] and first.headers["etag"] == '"1"'
    stale = put(env, "alice", {"retentionDays": 60, "version": 0})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
    stale_header = put(env, "alice", {"retentionDays": 60}, **{"If-Match": '"0"'})
    assert stale_header.status_code == 409
    second = put(env, "alice", {"retentionDays": 60}, **{"If-Match": '"1"'})
    assert second.status_code == 200 and second.json()["version"] == 2
    assert env.call("GET", "/api/privacy/settings", "alice").json()["retentionDays"] == 60
    assert env.call("GET", "/api/privacy/settings", "bob").json()["version"] == 0  # nobody else changed

    audit = env.call("GET", "/api/audit", "root", params={"action": "privacy.settings.update"}).json()["data"]
    mine = [event for event in audit if event["target"] == "alice"]
    assert [event["details"]["fields"] for event in mine] == [
        ["analytics_opt_in", "retention_days"],
        ["retention_days"],
    ]
    assert mine[1]["details"]["changes"] == {"retention_days": {"old": 30, "new": 60}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"processingMode": "everywhere"}, "processingMode"),
        ({"retentionDays": -1}, "retentionDays"),
        ({"retentionDays": "30"}, "retentionDays"),
        ({"doNotShare": "true"}, "doNotShare"),
        ({"specialCategoryCloudOptIn": None}, "specialCategoryCloudOptIn"),
        ({"region": "Europe/Paris"}, "region"),
        ({"processing_mode": "local_only"}, "processing_mode"),
        ({"favouriteColour": "blue"}, "favouriteColour"),
        ({"availableRegions": ["mars"]}, "availableRegions"),
        ({"version": "latest"}, "version"),
        ({"version": True}, "version"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field(env: Env, body: dict[str, object], param: str) -> None:
    response = put(env, "bob", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert env.call("GET", "/api/privacy/settings", "bob").json()["version"] == 0


def test_non_object_body_and_bad_if_match_are_400s(env: Env) -> None:
    assert env.call("PUT", "/api/privacy/settings", "bob", json=["local_only"]).status_code == 400
    bad = put(env, "bob", {"doNotShare": True}, **{"If-Match": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "If-Match"


def test_users_act_on_themselves_admins_on_anyone(env: Env) -> None:
    refused = env.call("GET", "/api/privacy/settings", "alice", as_user="bob")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert env.call("DELETE", "/api/privacy/data", "alice", as_user="bob").status_code == 403
    changed = put(env, "root", {"region": "us"}, as_user="admin-managed")
    assert changed.status_code == 200 and changed.json()["region"] == "us"
    assert env.call("GET", "/api/privacy/settings", "root", as_user="admin-managed").json()["version"] == 1
    assert httpx.get(env.server.base_url + "/api/privacy/settings").status_code == 401


@pytest.mark.parametrize(("setting", "reason"), [({"processingMode": "local_only"}, "user setting: local_only"),
                                                 ({"doNotShare": True}, "user setting: do_not_share")])  # fmt: skip
def test_no_cloud_settings_keep_complex_public_requests_local(
    env: Env, setting: dict[str, object], reason: str
) -> None:
    user = f"router-{next(iter(setting))}"
    env.clear()
    assert env.process("root", COMPLEX, user)["processingMode"] == "cloud"  # what the router does by default
    assert env.received()["cloud"] == 1
    assert put(env, "root", setting, as_user=user).status_code == 200
    env.clear()
    body = env.process("root", COMPLEX, user)
    assert body["processingMode"] == "local" and body["routing"]["reasons"][0].startswith(reason)  # type: ignore[index]
    assert env.received() == {"local": 1, "cloud": 0, "eu": 0, "us": 0}
    preview = route(env, user)
    assert preview["decision"] == "local" and preview["cloudAllowed"] is False


def test_special_categories_need_cloud_allowed_and_the_opt_in(env: Env) -> None:
    user = "special"
    assert put(env, "root", {"processingMode": "cloud_allowed"}, as_user=user).status_code == 200
    env.clear()
    assert env.process("root", HEALTH, user)["processingMode"] == "local"
    assert env.received()["cloud"] == 0
    assert put(env, "root", {"specialCategoryCloudOptIn": True}, as_user=user).status_code == 200
    body = env.process("root", HEALTH, user)
    assert body["processingMode"] == "cloud" and env.received()["cloud"] == 1
    assert "special_category_cloud_opt_in" in body["routing"]["reasons"][0]  # type: ignore[index]


def test_residency_each_region_only_its_endpoint(env: Env) -> None:
    for user, region in (("eu-user", "eu"), ("us-user", "us"), ("ap-user", "ap")):
        response = put(env, "root", {"region": region}, as_user=user)
        assert response.status_code == 200
        assert bool(response.json()["notices"]) is (region == "ap")
    env.clear()
    eu = env.process("root", COMPLEX, "eu-user")
    assert eu["processingMode"] == "cloud" and eu["routing"]["backend"] == "cloud-eu"  # type: ignore[index]
    assert env.received() == {"local": 0, "cloud": 0, "eu": 1, "us": 0}
    env.process("root", COMPLEX, "us-user")
    assert env.received() == {"local": 0, "cloud": 0, "eu": 1, "us": 1}
    ap = env.process("root", COMPLEX, "ap-user")
    assert ap["processingMode"] == "local"
    assert env.received() == {"local": 1, "cloud": 0, "eu": 1, "us": 1}
    preview = route(env, "eu-user")
    assert preview["decision"] == "cloud" and preview["region"] == "eu"
    records = wait_for_records(env, "eu-user", 1)
    assert [r["region"] for r in records] == ["eu"]


def wait_for_records(env: Env, user: str, count: int, who: str = "root") -> list[dict[str, object]]:
    """Records are written off the request path: poll the export until they are in."""
    for _ in range(100):
        document = env.call("GET", "/api/privacy/export", who, None if who == user else user).json()
        records = document["data"]["requestRecords"]
        if len(records) >= count:
            return records  # type: ignore[no-any-return]
        asyncio.run(asyncio.sleep(0.1))
    raise AssertionError(f"{user} has fewer than {count} records")


def test_export_is_exactly_the_callers_and_erasure_removes_it(env: Env) -> None:
    mine = [env.process("alice", "How do I drink more water?")["requestId"] for _ in range(2)]
    theirs = env.process("bob", "How do I sleep better?")["requestId"]
    records = wait_for_records(env, "alice", 2, who="alice")
    wait_for_records(env, "bob", 1, who="bob")
    response = env.call("GET", "/api/privacy/export", "alice")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    document = response.json()
    assert document["userId"] == "alice"
    assert sorted(r["id"] for r in records) == sorted(mine) and theirs not in json.dumps(document)
    assert all(r["user_id"] == "alice" for r in document["data"]["requestRecords"])
    assert document["data"]["settings"]["current"]["retention_days"] == 60
    assert any(e["action"] == "privacy.settings.update" for e in document["data"]["auditEvents"])
    assert "bob" not in json.dumps(document["data"])
    by_admin = env.call("GET", "/api/privacy/export", "root", "alice").json()
    assert by_admin["userId"] == "alice" and by_admin["data"]["requestRecords"] == document["data"]["requestRecords"]

    erased = env.call("DELETE", "/api/privacy/data", "alice")
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["requestRecords"] == 2 and erased.json()["deleted"]["settings"] == 2
    after = env.call("GET", "/api/privacy/export", "alice").json()["data"]
    assert after["requestRecords"] == [] and after["settings"]["current"]["version"] == 0
    assert wait_for_records(env, "bob", 1, who="bob")[0]["id"] == theirs
    trail = env.call("GET", "/api/audit", "root", params={"action": "privacy.erasure"}).json()["data"]
    assert len(trail) == 1 and trail[0]["actor"] == "data-subject" and trail[0]["target"] is None
    assert "alice" not in json.dumps(trail[0])


def test_retention_command_deletes_expired_records(env: Env) -> None:
    async def seed() -> None:
        db = Database(f"sqlite:///{env.data_dir / 'upcoach.db'}")
        old = datetime.now(UTC) - timedelta(days=400)
        base = {"endpoint": "hybrid", "privacy_level": "public", "decision": "local", "processing_mode": "local",
                "backend": "pool", "outcome": "ok", "latency_ms": 1.0}  # fmt: skip
        await RequestRepository(db).add_many([
            RequestRecord(id="expired-1", user_id="retention-user", created_at=old, **base),  # type: ignore[arg-type]
            RequestRecord(id="fresh-1", user_id="retention-user", created_at=datetime.now(UTC), **base),  # type: ignore[arg-type]
        ])  # fmt: skip
        await db.dispose()

    asyncio.run(seed())
    result = cli(env.data_dir, "privacy", "retention")
    assert result.returncode == 0, result.stderr
    assert "deleted 1 expired request records" in result.stdout
    left = [r["id"] for r in wait_for_records(env, "retention-user", 1)]
    assert left == ["fresh-1"]


def test_local_only_end_to_end_with_the_real_model(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> None:
    """The real local model answers a local_only user's complex public request; the cloud that the router would
    otherwise choose (shown first with another user) receives nothing."""
    with FaultServer() as cloud, model_server(tmp_path_factory, model_path, "privacy-e2e", {
        "UPCOACH_CLOUD_BASE_URL": cloud.url, "UPCOACH_CLOUD_MODEL": "ok"}) as server:  # fmt: skip

        def process(user: str) -> dict[str, object]:
            body = {"messages": [{"role": "user", "content": COMPLEX}], "maxTokens": 6, "temperature": 0,
                    "routingHints": {"privacyLevel": "public", "preferLocal": False}}  # fmt: skip
            response = httpx.post(server.base_url + "/api/ai/hybrid/process", json=body, timeout=120,
                                  headers={"X-User-Id": user})  # fmt: skip
            assert response.status_code == 200, response.text
            return response.json()  # type: ignore[no-any-return]

        assert process("someone-else")["processingMode"] == "cloud" and len(cloud.requests) == 1
        cloud.clear()
        saved = httpx.put(server.base_url + "/api/privacy/settings", json={"processingMode": "local_only"},
                          headers={"X-User-Id": "solo"})  # fmt: skip
        assert saved.status_code == 200 and saved.json()["processingMode"] == "local_only"
        body = process("solo")
        assert body["processingMode"] == "local" and body["routing"]["reasons"][0] == "user setting: local_only"  # type: ignore[index]
        assert body["response"]["content"].strip()  # type: ignore[index]
        assert body["metrics"]["costsIncurred"] == 0  # type: ignore[index]
        assert cloud.requests == []


def test_a_named_user_longer_than_the_columns_is_a_400_on_every_route(env: Env) -> None:
    """X-User-Id is checked where it is read (security/acting.py), so no route can pass a name the user_id columns
    (128 characters) would refuse later, in a background write."""
    too_long = "u" * 129
    body = {"messages": [{"role": "user", "content": "hello"}]}
    for method, path, payload in [
        ("POST", "/api/ai/hybrid/route", body),
        ("GET", "/api/privacy/settings", None),
        ("GET", "/api/journal/entries", None),
    ]:
        response = env.call(method, path, "root", too_long, json=payload)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["param"] == "X-User-Id", path
    assert env.call("GET", "/api/privacy/settings", "root", "u" * 128).status_code == 200
