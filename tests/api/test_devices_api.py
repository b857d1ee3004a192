"""Devices and sync over HTTP on a live server with auth on: a device registers and gets its own key, delivers its
outbox exactly once (a replayed batch and a replayed Idempotency-Key create nothing), reads what changed since its
cursor, and is refused the moment its owner revokes it, while the owner's own key keeps working."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.test_privacy_api import create_keys
from tests.conftest import LiveServer, start_server, stop_server
from upcoach.security.keys import Role


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("devices-api")
    keys = asyncio.run(
        create_keys(tmp / "data", {"alice": Role.user, "bob": Role.user, "dora": Role.user, "root": Role.admin})
    )
    server = start_server(tmp, {"UPCOACH_AUTH": "on", "UPCOACH_LOAD_MODEL": "false",
                                "UPCOACH_RATE_LIMIT_BURST": "1000"}, wait_for="/healthz")  # fmt: skip
    yield server, keys
    stop_server(server)


def call(server: LiveServer, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=60, **kwargs)


def register(server: LiveServer, key: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "Pixel 8", "os": "Android 15", "capabilities": ["local-llm", "npu"], "ramMb": 8192, **extra}
    response = call(server, key, "POST", "/api/devices", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def journal_item(text: str) -> dict[str, Any]:
    return {"clientId": uuid.uuid4().hex, "kind": "journal",
            "data": {"transcript": text, "recordedAt": "2026-12-01T08:00:00+01:00", "mood": 4}}  # fmt: skip


def entries(server: LiveServer, key: str) -> list[dict[str, Any]]:
    response = call(server, key, "GET", "/api/journal/entries", params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def test_sync_applies_each_item_once_and_rejects_per_item(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    registered = register(server, keys["alice"])
    device_key = registered["apiKey"]
    assert registered["device"]["capabilities"] == ["local-llm", "npu"] and not registered["device"]["revoked"]
    items = [
        journal_item("Walked for twenty minutes before work and felt calmer."),
        journal_item("Slept badly, but I kept my evening routine."),
        {
            "clientId": "usage-2026-12-01",
            "kind": "usage",
            "data": {"day": "2026-12-01", "localGenerations": 6.4, "libraryAnswers": 1.2, "epsilon": 1.0},
        },
        {"clientId": "r-1", "kind": "rating", "data": {"requestId": "never-served", "rating": 5}},
        {"clientId": "x-1", "kind": "telepathy", "data": {}},
        {"clientId": "j-bad", "kind": "journal", "data": {"transcript": ""}},
    ]
    first = call(server, device_key, "POST", "/api/sync", json={"items": items, "modelVersion": "m@1"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert [r["status"] for r in body["results"]] == ["accepted"] * 3 + ["rejected"] * 3
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (3, 0, 3)
    assert [r["code"] for r in body["results"][3:]] == ["not_found", "unknown_kind", "invalid_request"]
    assert len(entries(server, keys["alice"])) == 2
    # The same batch again (a retry after a cut connection): nothing new; what was refused is refused again.
    again = call(server, device_key, "POST", "/api/sync", json={"items": items}).json()
    assert [r["status"] for r in again["results"]] == ["duplicate"] * 3 + ["rejected"] * 3
    assert again["results"][0]["id"] == body["results"][0]["id"]
    assert len(entries(server, keys["alice"])) == 2
    # Client ids are per user: bob's item with alice's id is his own.
    bob = call(server, keys["bob"], "POST", "/api/sync", json={"items": [{**items[0]}]}).json()
    assert bob["results"][0]["status"] == "accepted"
    listed = call(server, keys["alice"], "GET", "/api/devices").json()["data"]
    mine = next(d for d in listed if d["id"] == registered["device"]["id"])
    assert mine["modelVersion"] == "m@1" and mine["lastSyncAt"] is not None


def test_idempotency_key_replays_the_first_answer(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    body = {"transcript": "Finished the report early and went climbing.", "recordedAt": "2026-12-02T18:00:00Z"}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    before = len(entries(server, keys["bob"]))
    first = call(server, keys["bob"], "POST", "/api/journal/entries", json=body, headers=headers)
    second = call(server, keys["bob"], "POST", "/api/journal/entries", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    # The stored answer holds the transcript, so it is sealed with a key only the caller's credentials give.
    stored = sorted((server.log_path.parent / "data").glob("upcoach.db*"))  # the database and its WAL
    assert stored and not any(b"went climbing" in path.read_bytes() for path in stored)
    assert len(entries(server, keys["bob"])) == before + 1
    reused = call(server, keys["bob"], "POST", "/api/journal/entries", json={**body, "mood": 2}, headers=headers)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    # Another caller with the same key is another scope: it creates its own entry.
    other = call(server, keys["alice"], "POST", "/api/journal/entries", json=body, headers=headers)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    bad = call(server, keys["bob"], "POST", "/api/sync", json={"items": []}, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
    # A failed request stores nothing: the same key works once the request is right.
    key = {"Idempotency-Key": uuid.uuid4().hex}
    failed = call(server, keys["bob"], "POST", "/api/sync", json={"items": "nope"}, headers=key)
    assert failed.status_code == 400
    assert call(server, keys["bob"], "POST", "/api/sync", json={"items": []}, headers=key).status_code == 200


def test_an_erasure_purges_the_stored_answers_of_the_users_posts(env: tuple[LiveServer, dict[str, str]]) -> None:
    """A stored answer is a copy of what the POST created (a journal entry's transcript): it goes with the erasure,
    and a retry with the same key afterwards is a new request, not a replay of erased data."""
    server, keys = env
    body = {"transcript": "Told my sister about the new job over dinner.", "recordedAt": "2026-12-02T20:00:00Z"}
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = call(server, keys["dora"], "POST", "/api/journal/entries", json=body, headers=headers)
    assert first.status_code == 201, first.text
    replayed = call(server, keys["dora"], "POST", "/api/journal/entries", json=body, headers=headers)
    assert replayed.headers["idempotent-replayed"] == "true"
    exported = call(server, keys["dora"], "GET", "/api/privacy/export").json()
    assert [answer["key"] for answer in exported["data"]["storedAnswers"]] == [headers["Idempotency-Key"]]
    erased = call(server, keys["dora"], "DELETE", "/api/privacy/data")
    assert erased.status_code == 200, erased.text
    assert erased.json()["deleted"]["storedAnswers"] == 1 and erased.json()["deleted"]["journalEntries"] == 1
    after = call(server, keys["dora"], "POST", "/api/journal/entries", json=body, headers=headers)
    assert after.status_code == 201 and "idempotent-replayed" not in after.headers
    assert after.json()["id"] != first.json()["id"]
    assert call(server, keys["dora"], "GET", "/api/privacy/export").json()["data"]["storedAnswers"][0]["status"] == 201


def test_changes_since_cursor(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    device_key = register(server, keys["bob"])["apiKey"]
    full = call(server, device_key, "GET", "/api/sync")
    assert full.status_code == 200, full.text
    state = full.json()
    assert state["full"] is True and state["settings"]["version"] == 0 and state["bundle"]["since"] is None
    assert state["bundle"]["url"] == "/api/coach/strategies/bundle"
    quiet = call(server, device_key, "GET", "/api/sync", params={"since": state["cursor"]}).json()
    assert quiet["full"] is False and quiet["settings"] is None and quiet["bundle"] is None and quiet["grants"] == []
    changed = call(server, keys["bob"], "PUT", "/api/privacy/settings", json={"analyticsOptIn": True, "version": 0})
    assert changed.status_code == 200, changed.text
    grant = call(server, keys["bob"], "POST", "/api/privacy/grants", json={"coachId": "carol", "scopes": ["journal"]})
    assert grant.status_code == 201, grant.text
    delta = call(server, device_key, "GET", "/api/sync", params={"since": quiet["cursor"]}).json()
    assert delta["settings"]["analyticsOptIn"] is True and delta["settings"]["version"] == 1
    assert [g["id"] for g in delta["grants"]] == [grant.json()["id"]]
    for cursor in ("garbage", "e30"):
        bad = call(server, device_key, "GET", "/api/sync", params={"since": cursor})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since", cursor


def test_revoked_device_is_refused_and_the_owner_is_not(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    registered = register(server, keys["alice"])
    device_id, device_key = registered["device"]["id"], registered["apiKey"]
    assert call(server, device_key, "GET", "/api/sync").status_code == 200
    # Someone else's device answers like a missing one.
    assert call(server, keys["bob"], "POST", f"/api/devices/{device_id}/revoke").status_code == 404
    revoked = call(server, keys["alice"], "POST", f"/api/devices/{device_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    refused = call(server, device_key, "POST", "/api/sync", json={"items": [journal_item("after revocation")]})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    assert call(server, keys["alice"], "GET", "/api/sync").status_code == 200
    assert call(server, keys["alice"], "POST", f"/api/devices/{device_id}/revoke").status_code == 200


def test_bad_registrations(env: tuple[LiveServer, dict[str, str]]) -> None:
    server, keys = env
    for body in ({"model": "X", "os": "Y", "capabilities": ["telepathy"]}, {"model": "", "os": "Y"},
                 {"model": "X", "os": "Y", "ramMb": 0}):  # fmt: skip
        response = call(server, keys["alice"], "POST", "/api/devices", json=body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request", body
    assert httpx.post(server.base_url + "/api/devices", json={"model": "X", "os": "Y"}).status_code == 401
