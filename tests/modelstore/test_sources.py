"""Model downloads reach public addresses only (SSRF): checked after DNS resolution, on every redirect hop, with the
connection pinned to the checked address, unless UPCOACH_MODEL_SOURCE_ALLOW names the address or host.

Real HTTP servers on loopback (127.0.0.1 and 127.0.0.2 are distinct peers on Linux); a stored model's bytes come
from them only when the test allows them.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.modelstore.conftest import FileServer, gguf_bytes
from upcoach.config import Settings
from upcoach.errors import SourceNotAllowed
from upcoach.modelstore.crypto import StaticKeyProvider
from upcoach.modelstore.manager import ModelManager, PullSpec
from upcoach.modelstore.registry import ModelRegistry
from upcoach.modelstore.sources import SourcePolicy, refusal
from upcoach.modelstore.store import ModelStore
from upcoach.modelstore.swap import SwappableBackend
from upcoach.observability.audit import AuditLog
from upcoach.storage.database import Database

REFUSED = [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00:ec2::254", "private"),
    ("fc00::1", "private"), ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("240.0.0.1", "reserved"), ("255.255.255.255", "reserved"),
    ("100.64.0.1", "not globally routable"), ("192.0.2.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::1", "loopback"), ("2002:a9fe:a9fe::1", "link-local"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("::127.0.0.1", "reserved"),
]  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700::1111", "2a00:1450:4001:80b::200e"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and found.startswith(reason), found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_every_answer_is_checked_and_the_allow_list_takes_ips_networks_and_names() -> None:
    answers = {"mixed.test": ["93.184.215.14", "10.0.0.5"], "inside.test": ["10.20.3.4"], "meta.test": ["fd00::1"]}
    policy = SourcePolicy(resolver=lambda host, port: answers[host])
    with pytest.raises(SourceNotAllowed, match="private"):  # one private answer is enough to refuse
        policy.address_for("mixed.test", 443)
    assert SourcePolicy(["10.0.0.5"], resolver=policy.resolver).address_for("mixed.test", 443) == "93.184.215.14"
    assert SourcePolicy(["10.20.0.0/16"], resolver=policy.resolver).address_for("inside.test", 443) == "10.20.3.4"
    assert SourcePolicy(["Inside.Test"], resolver=policy.resolver).address_for("inside.test", 443) == "10.20.3.4"
    with pytest.raises(SourceNotAllowed):
        SourcePolicy(["inside.test", "10.0.0.0/8"], resolver=policy.resolver).address_for("meta.test", 443)


class Redirector:
    """A real HTTP server on 127.0.0.2: ``/to?<url>`` answers 302 to that URL, ``/file`` serves ``data``."""

    def __init__(self) -> None:
        self.data = b""
        self.hits: list[str] = []
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                redirector.hits.append(self.path)
                if self.path.startswith("/to?"):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/to?") :])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(redirector.data)))
                self.end_headers()
                self.wfile.write(redirector.data)

        self.httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.2") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def redirector() -> Iterator[Redirector]:
    server = Redirector()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def store_for(settings: Settings, db: Database, key: bytes, allow: list[str]) -> ModelStore:
    configured = settings.model_copy(update={"model_source_allow": allow})
    return ModelStore(configured, ModelRegistry(db), StaticKeyProvider(key), retry_delay=0.01)


async def test_a_loopback_source_is_refused_unless_allowed(
    settings: Settings, store_db: Database, model_key: bytes, file_server: FileServer
) -> None:
    data = gguf_bytes(50_000, seed=21)
    url = file_server.add("m.gguf", data)
    strict = store_for(settings, store_db, model_key, [])
    with pytest.raises(SourceNotAllowed) as refused:
        await strict.pull(url, name="m", version="1", sha256=hashlib.sha256(data).hexdigest())
    assert refused.value.status == 400 and refused.value.code == "source_not_allowed"
    assert "127.0.0.1" not in refused.value.message and "loopback" in refused.value.message
    assert file_server.requests == []  # refused before connecting
    assert (await strict.registry.get("m@1")).status == "failed"
    allowed = store_for(settings, store_db, model_key, ["127.0.0.1"])
    assert (await allowed.pull(url, name="m", version="1", sha256=hashlib.sha256(data).hexdigest())).status == "ready"


@pytest.mark.parametrize("target", ["loopback", "metadata"])
async def test_redirects_to_refused_addresses_are_refused_at_that_hop(
    settings: Settings, store_db: Database, model_key: bytes, file_server: FileServer, redirector: Redirector,
    target: str,
) -> None:  # fmt: skip
    data = gguf_bytes(50_000, seed=22)
    inside = file_server.add("inside.gguf", data)  # on 127.0.0.1, not allowed
    location = inside if target == "loopback" else "http://169.254.169.254/latest/meta-data/iam/"
    store = store_for(settings, store_db, model_key, ["127.0.0.2"])  # the first hop is allowed
    with pytest.raises(SourceNotAllowed, match="redirect"):
        await store.pull(redirector.url(f"/to?{location}"), name="r", version="1",
                         sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    assert redirector.hits == [f"/to?{location}"] and file_server.requests == []


async def test_the_connection_goes_to_the_checked_address_no_rebinding(
    settings: Settings, store_db: Database, model_key: bytes, file_server: FileServer, redirector: Redirector
) -> None:
    """The name is resolved once per connection and the socket connects to that very answer: a second lookup
    (which would now say 127.0.0.1) never happens. models.test is unknown to the system resolver."""
    data = gguf_bytes(50_000, seed=23)
    redirector.data = data
    file_server.add("file", b"the wrong server")
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    store = store_for(settings, store_db, model_key, ["127.0.0.2"])
    store.sources.resolver = lambda host, port: next(answers)
    version = await store.pull(redirector.url("/file", host="models.test"), name="p", version="1",
                               sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    assert version.status == "ready" and redirector.hits == ["/file"] and file_server.requests == []


async def test_job_errors_name_the_refusal_not_the_internal_address(
    settings: Settings, store_db: Database, model_key: bytes, audit: AuditLog, redirector: Redirector
) -> None:
    store = store_for(settings, store_db, model_key, ["127.0.0.2"])
    manager = ModelManager(settings, store.registry, store, SwappableBackend(), audit)
    source = redirector.url("/to?http://10.9.8.7:8080/admin/model.gguf")
    job = await manager.download(PullSpec.parse(source=source, model_id=None, name="j", version="1",
                                                sha256="ab" * 32), actor="ops")  # fmt: skip
    for _ in range(200):
        if job.status in ("done", "failed"):
            break
        await asyncio.sleep(0.05)
    view = job.to_json()
    assert view["status"] == "failed" and view["errorCode"] == "source_not_allowed", view
    assert "10.9.8.7" not in str(view["error"]) and "admin" not in str(view["error"])
    await manager.aclose()
