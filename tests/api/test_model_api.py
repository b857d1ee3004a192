"""Model management end to end on one live server with the real model and auth on: download with progress, update
under steady chat traffic with zero failed requests, rollback, delete rules, version A/B, role checks, and a
phone-like client that resumes an artifact download and verifies the signed manifest."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server
from upcoach.modelstore.catalog import DEFAULT_MODEL, get_entry
from upcoach.modelstore.signing import canonical_manifest

NAME = DEFAULT_MODEL
SHA = get_entry(DEFAULT_MODEL).sha256
V1, V2 = f"{NAME}@1", f"{NAME}@2"
BROKEN = b"GGUF" + os.urandom(3 << 20)


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "upcoach.cli", *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def file_url(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback HTTP server of model files: ``<url>/model.gguf`` (the cached GGUF, the 'URL source' of a new
    version) and ``<url>/broken.gguf`` (GGUF magic, then noise: installs, but cannot load)."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "model.gguf").symlink_to(model_path.resolve())
    (folder / "broken.gguf").write_bytes(BROKEN)
    handler = partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("models-api")
    data_dir = data_dir_with_model(tmp, model_path)
    # Version 1 is installed and active before the start: the server boots from the registry (an in-memory file).
    imported = cli(data_dir, "models", "import", str(model_path), "--name", NAME, "--version", "1", "--use")
    assert imported.returncode == 0, imported.stderr
    keys: dict[str, str] = {}
    for user, role in (("root", "admin"), ("alice", "user"), ("eve", "auditor")):
        result = cli(data_dir, "keys", "create", "--user", user, "--role", role)
        assert result.returncode == 0, result.stderr
        keys[user] = result.stdout.strip().splitlines()[-1]
    live = start_server(tmp, {"UPCOACH_AUTH": "on", "UPCOACH_RATE_LIMIT_BURST": "100000",
                              "UPCOACH_RATE_LIMIT_PER_MINUTE": "100000", "UPCOACH_THREADS": "1",
                              # The test's file server is on loopback: downloads may reach it only when allowed.
                              "UPCOACH_MODEL_SOURCE_ALLOW": "127.0.0.1"})  # fmt: skip
    yield live, keys
    stop_server(live)


def h(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def api(
    server: tuple[LiveServer, dict[str, str]], method: str, path: str, who: str = "root", **kwargs: Any
) -> httpx.Response:
    live, keys = server
    return httpx.request(method, live.base_url + "/api/ai/models" + path, headers=h(keys[who]), timeout=300, **kwargs)


def wait_job(server: tuple[LiveServer, dict[str, str]], job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api(server, "GET", f"/jobs/{job_id}").json()["job"]
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def active_id(server: tuple[LiveServer, dict[str, str]]) -> str | None:
    return api(server, "GET", "/status").json()["activeId"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(server: tuple[LiveServer, dict[str, str]], file_url: str) -> str:
    """The server serves version 1 from the registry; returns the URL of the model file for later versions."""
    assert active_id(server) == V1
    return file_url + "/model.gguf"


def test_state_changes_need_the_admin_role(server: tuple[LiveServer, dict[str, str]]) -> None:
    for who in ("alice", "eve"):
        for method, path, body in (
            ("POST", "/download", {"modelId": "gemma3-270m"}),
            ("POST", "/update", {"modelId": V1}),
            ("POST", "/rollback", None),
            ("DELETE", f"/{V1}", None),
            ("POST", "/ab", {"candidateId": V2, "share": 0.5}),
            ("POST", "/ab/promote", None),
            ("POST", "/ab/stop", None),
        ):
            response = api(server, method, path, who, json=body)
            assert response.status_code == 403, (who, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    assert api(server, "GET", "/status", "eve").status_code == 200
    assert api(server, "GET", "/status", "alice").status_code == 403
    live, _ = server
    assert httpx.get(live.base_url + "/api/ai/models/recommend").status_code == 401


def test_bad_requests_are_clear_4xx(server: tuple[LiveServer, dict[str, str]], file_url: str) -> None:
    cases = [
        ({"source": "ftp://example.com/x.gguf", "sha256": SHA}, 400, "invalid_request"),
        ({"source": file_url}, 400, "invalid_request"),  # a URL without its sha256
        ({"source": file_url, "sha256": "xyz"}, 400, "invalid_request"),
        ({"source": file_url, "modelId": NAME, "sha256": SHA}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"modelId": "no-such-model"}, 404, "model_not_found"),
        ({"modelId": NAME, "surprise": 1}, 400, "invalid_request"),
        # The name and version also name the file on disk: refused at once, not left to fail in the job.
        ({"source": file_url, "sha256": SHA, "name": "../../etc/x"}, 400, "invalid_request"),
        ({"source": file_url, "sha256": SHA, "name": "ok", "version": "a/b"}, 400, "invalid_request"),
    ]
    for body, status, code in cases:
        response = api(server, "POST", "/download", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code
    assert api(server, "POST", "/update", json={"modelId": f"{NAME}@nope"}).status_code == 404
    assert api(server, "DELETE", "/nothing@1").status_code == 404
    assert api(server, "GET", "/nothing@1/manifest").status_code == 404
    assert api(server, "POST", "/ab/stop").status_code == 409


def test_download_reports_progress_and_a_version_failing_its_smoke_test_never_serves(
    server: tuple[LiveServer, dict[str, str]], file_url: str
) -> None:
    broken = hashlib.sha256(BROKEN).hexdigest()
    body = {"source": file_url + "/broken.gguf", "name": "broken", "version": "1", "sha256": broken}
    started = api(server, "POST", "/download", json=body)
    assert started.status_code == 202, started.text
    assert started.json()["job"]["kind"] == "download"
    job = wait_job(server, started.json()["job"]["id"])
    assert job["status"] == "done" and job["modelId"] == "broken@1", job
    assert job["bytesDone"] == job["bytesTotal"] == len(BROKEN)
    assert {"rateBytesPerSec", "etaSeconds"} <= set(job)
    update = api(server, "POST", "/update", json={"modelId": "broken@1"})
    assert update.status_code == 202
    failed = wait_job(server, update.json()["job"]["id"])
    assert failed["status"] == "failed" and failed["errorCode"] == "smoke_test_failed", failed
    assert active_id(server) == V1
    live, keys = server
    assert chat(live, keys["alice"], stream=False)[0] == 200
    assert api(server, "DELETE", "/broken@1").status_code == 200


def chat(live: LiveServer, key: str, stream: bool) -> tuple[int, str]:
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hi in three words."}],
            "max_tokens": 6, "temperature": 0, "stream": stream}  # fmt: skip
    if not stream:
        response = httpx.post(live.v1 + "/chat/completions", headers=h(key), json=body, timeout=120)
        text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else response.text
        return response.status_code, text
    pieces: list[str] = []
    with httpx.stream("POST", live.v1 + "/chat/completions", headers=h(key), json=body, timeout=120) as response:
        if response.status_code != 200:
            return response.status_code, response.read().decode()
        done = False
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if "error" in event:
                return 599, json.dumps(event)
            pieces.append(event["choices"][0]["delta"].get("content") or "")
    return (200 if done else 598), "".join(pieces)


class Traffic:
    """Concurrent clients sending chat requests (half streaming) until stopped; every result is kept."""

    def __init__(self, live: LiveServer, key: str, clients: int = 2) -> None:
        self.results: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(live, key, i % 2 == 0), daemon=True) for i in range(clients)
        ]

    def _run(self, live: LiveServer, key: str, stream: bool) -> None:
        while not self._stop.is_set():
            try:
                self.results.append(chat(live, key, stream))
            except httpx.HTTPError as exc:
                self.results.append((0, repr(exc)))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while len(self.results) < count and time.monotonic() < deadline:
            time.sleep(0.1)


def test_update_under_traffic_fails_no_request_and_rollback_restores(
    server: tuple[LiveServer, dict[str, str]], installed: str
) -> None:
    live, keys = server
    with Traffic(live, keys["alice"]) as traffic:
        traffic.wait_for(3)
        started = api(server, "POST", "/update", json={"source": installed, "version": "2", "sha256": SHA})
        assert started.status_code == 202, started.text
        job = wait_job(server, started.json()["job"]["id"])
        assert job["status"] == "done", job
        assert job["result"] == {"activeId": V2, "previousId": V1}
        during = len(traffic.results)
        traffic.wait_for(during + 3)  # requests after the swap, on the new engine
    failures = [result for result in traffic.results if result[0] != 200 or not result[1].strip()]
    assert not failures, failures
    assert len(traffic.results) >= 6
    rolled = api(server, "POST", "/rollback")
    assert rolled.status_code == 200, rolled.text
    assert rolled.json() == {"activeId": V1, "previousId": V2}
    status = api(server, "GET", "/status").json()
    assert status["activeId"] == V1
    models = {m["id"]: m for m in status["models"]}
    assert models[V1]["active"] and models[V2]["previous"] and models[V2]["status"] == "ready"
    assert "gemma3-270m" in models and not models["gemma3-270m"]["installed"]
    assert job["id"] in {j["id"] for j in status["jobs"]}
    assert all({"bytesDone", "bytesTotal", "rateBytesPerSec", "etaSeconds"} <= set(job) for job in status["jobs"])


def test_version_ab_splits_users_and_compares(server: tuple[LiveServer, dict[str, str]], installed: str) -> None:
    live, keys = server
    started = api(server, "POST", "/ab", json={"candidateId": V2, "share": 0.5})
    assert started.status_code == 200, started.text
    assert api(server, "POST", "/ab", json={"candidateId": V2, "share": 0.5}).status_code == 409
    assert api(server, "POST", "/update", json={"modelId": V2}).status_code == 409  # not during a test
    body = {"messages": [{"role": "user", "content": "Say hi."}], "maxTokens": 4, "temperature": 0}
    served: dict[str, str] = {}
    for i in range(16):
        response = httpx.post(live.base_url + "/api/ai/hybrid/process", json=body, timeout=120,
                              headers=h(keys["root"], **{"X-User-Id": f"user-{i}"}))  # fmt: skip
        assert response.status_code == 200, response.text
        served[f"user-{i}"] = response.json()["requestId"]
    comparison = api(server, "GET", "/ab", "eve").json()["abTest"]
    counts = {version: stats["requests"] for version, stats in comparison["versions"].items()}
    assert counts[V1] + counts[V2] == 16 and counts[V1] > 0 and counts[V2] > 0
    assert comparison["versions"][V2]["totalMs"]["mean"] is not None
    # Only the user who was served an answer rates it (here through the admin acting for them), once.
    user, request_id = next(iter(served.items()))
    version = rate_ab(server, user, request_id, 4)
    assert version.status_code == 200 and version.json()["rating"] == 4, version.text
    rated_version = version.json()["version"]
    assert rate_ab(server, user, request_id, 5).json() == {"version": rated_version, "rating": 5}
    assert api(server, "POST", "/ab/rating", "alice", json={"requestId": request_id, "rating": 1}).status_code == 404
    assert api(server, "POST", "/ab/rating", "alice", json={"version": V2, "rating": 4}).status_code == 400
    assert rate_ab(server, user, request_id, 9).status_code == 400
    ratings = api(server, "GET", "/ab").json()["abTest"]["versions"][rated_version]["ratings"]
    assert ratings["count"] == 1 and ratings["mean"] == 5
    # The operator's commands: `upcoach models ab status|stop` call the running server's API with an admin key.
    status = ab_cli(live, keys["root"], "status")
    assert status.returncode == 0 and f"candidate {V2}" in status.stdout and V1 in status.stdout, status
    assert ab_cli(live, keys["alice"], "stop").returncode == 1  # a user's key: the server's 403 is the exit code
    stopped = ab_cli(live, keys["root"], "stop")
    assert stopped.returncode == 0 and f'"activeId": "{V1}"' in stopped.stdout, stopped
    assert "no A/B test is running" in ab_cli(live, keys["root"], "status").stdout
    assert active_id(server) == V1


def rate_ab(server: tuple[LiveServer, dict[str, str]], user: str, request_id: str, rating: int) -> httpx.Response:
    """Rate an A/B answer for ``user`` (records are written in the background: wait for the request's)."""
    live, keys = server
    deadline = time.monotonic() + 30
    while True:
        response = httpx.post(live.base_url + "/api/ai/models/ab/rating", timeout=30,
                              headers=h(keys["root"], **{"X-User-Id": user}),
                              json={"requestId": request_id, "rating": rating})  # fmt: skip
        if response.status_code != 404 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def ab_cli(live: LiveServer, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "upcoach.cli", "models", "ab", *args, "--url", live.base_url]
    env = {**os.environ, "UPCOACH_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def test_recommend_over_http(server: tuple[LiveServer, dict[str, str]], installed: str) -> None:
    device = {"ramMb": 8192, "deviceModel": "Pixel 8", "batteryLevel": 80, "capabilities": "local-llm,npu"}
    ok = api(server, "GET", "/recommend", "alice", params=device)
    assert ok.status_code == 200
    body = ok.json()
    assert body["tier"] == "flagship" and body["modelId"] == NAME and body["reasons"]
    assert body["sizeBytes"] == get_entry(NAME).size and body["installedId"] == V1
    assert body["runtimeReported"] is True and body["onDevice"] is True and body["accelerators"] == ["npu"]
    low = api(server, "GET", "/recommend", "alice", params={"ramMb": 2048}).json()
    assert low["tier"] == "low-end" and low["modelId"] is None and low["artifactUrl"] is None
    # 8 GB and an NPU, the app without the runtime: the hardware is a flagship; only the runtime is missing
    npu = api(server, "GET", "/recommend", "alice", params={**device, "capabilities": "npu"}).json()
    assert npu["tier"] == "flagship" and npu["runtimeReported"] is False and npu["onDevice"] is False
    for params in ({"ramMb": "lots"}, {"ramMb": -1}, {"batteryLevel": 101}, {"batteryLevel": "full"},
                   {"capabilities": "npu,camera"}):  # fmt: skip
        bad = api(server, "GET", "/recommend", "alice", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request", params


def test_phone_resumes_the_artifact_and_verifies_the_signed_manifest(
    server: tuple[LiveServer, dict[str, str]], installed: str
) -> None:
    live, keys = server
    url = f"{live.base_url}/api/ai/models/{V1}/artifact"
    key = api(server, "GET", "/signing-key", "alice").json()
    manifest = api(server, "GET", f"/{V1}/manifest", "alice").json()
    assert set(manifest) == {"name", "version", "sha256", "size", "signature", "keyId"}
    assert manifest["keyId"] == key["keyId"] and manifest["sha256"] == SHA
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["publicKey"]))
    message = canonical_manifest(manifest["name"], manifest["version"], manifest["sha256"], manifest["size"])
    public.verify(base64.b64decode(manifest["signature"]), message)  # raises if forged

    received = bytearray()
    with httpx.stream("GET", url, headers=h(keys["alice"]), timeout=120) as first:
        assert first.status_code == 200
        assert first.headers["accept-ranges"] == "bytes" and first.headers["etag"] == f'"{SHA}"'
        assert int(first.headers["content-length"]) == manifest["size"]
        etag = first.headers["etag"]
        for block in first.iter_bytes():
            received += block
            if len(received) > 7_000_000:
                break  # the connection drops mid-body
    resumed_at = len(received)
    headers = h(keys["alice"], Range=f"bytes={resumed_at}-", **{"If-Range": etag})
    with httpx.stream("GET", url, headers=headers, timeout=300) as rest:
        assert rest.status_code == 206
        assert rest.headers["content-range"] == f"bytes {resumed_at}-{manifest['size'] - 1}/{manifest['size']}"
        for block in rest.iter_bytes():
            received += block
    assert len(received) == manifest["size"]
    assert hashlib.sha256(received).hexdigest() == manifest["sha256"]

    def get(**extra: str) -> httpx.Response:
        with httpx.stream("GET", url, headers=h(keys["alice"], **extra), timeout=60) as response:
            response.read() if response.status_code != 200 else None
            return response

    middle = get(Range="bytes=100-199")
    assert middle.status_code == 206 and middle.content == bytes(received[100:200])
    suffix = get(Range="bytes=-10")
    assert suffix.status_code == 206 and suffix.content == bytes(received[-10:])
    unsatisfiable = get(Range=f"bytes={manifest['size']}-")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{manifest['size']}"
    assert unsatisfiable.json()["error"]["code"] == "range_not_satisfiable"
    assert get(**{"If-None-Match": etag}).status_code == 304
    # A validator from another file: If-Range says "send it all", not the range.
    assert get(Range="bytes=0-9", **{"If-Range": '"' + "0" * 64 + '"'}).status_code == 200


def test_delete_rules_and_audit(server: tuple[LiveServer, dict[str, str]], installed: str) -> None:
    active = active_id(server)
    refused = api(server, "DELETE", f"/{active}")
    assert refused.status_code == 409 and refused.json()["error"]["code"] in ("model_state_conflict", "model_in_use")
    assert api(server, "DELETE", "/nothing@1").status_code == 404
    other = V2 if active == V1 else V1
    assert api(server, "DELETE", f"/{other}").status_code == 200
    assert other not in {m["id"] for m in api(server, "GET", "/status").json()["models"]}
    live, keys = server
    trail = httpx.get(live.base_url + "/api/audit", headers=h(keys["eve"]), params={"limit": 1000}).json()["data"]
    actions = {(e["action"], e["actor"]) for e in trail}
    for action in ("model.download", "model.activate", "model.rollback", "model.delete", "model.ab_started"):
        assert (action, "root") in actions, action


def test_a_tampered_artifact_is_refused_before_any_byte(
    server: tuple[LiveServer, dict[str, str]], file_url: str
) -> None:
    """Every chunk is edited after the install: the phone gets 503 model_tampered and the trail an event, where it
    used to get a 200 (or 206) whose body broke off at once."""
    body = {"source": file_url + "/broken.gguf", "name": "tampered", "version": "1",
            "sha256": hashlib.sha256(BROKEN).hexdigest()}  # fmt: skip
    job = wait_job(server, api(server, "POST", "/download", json=body).json()["job"]["id"])
    assert job["status"] == "done", job
    live, keys = server
    stored = live.log_path.parent / "data" / "models" / "store" / "tampered@1.ucm"
    raw = bytearray(stored.read_bytes())
    raw[4096:] = bytes(b ^ 0xFF for b in raw[4096:])  # the header stays intact; the chunks do not
    stored.write_bytes(bytes(raw))
    url = f"{live.base_url}/api/ai/models/tampered@1/artifact"
    for extra in ({}, {"Range": "bytes=2000000-"}):
        refused = httpx.get(url, headers=h(keys["alice"], **extra), timeout=60)
        assert refused.status_code == 503, (extra, refused.status_code)
        assert refused.json()["error"]["code"] == "model_tampered"
    trail = httpx.get(live.base_url + "/api/audit", headers=h(keys["eve"]),
                      params={"action": "model.tampered"}).json()["data"]  # fmt: skip
    assert "tampered@1" in {e["target"] for e in trail}
    assert api(server, "DELETE", "/tampered@1").status_code == 200
