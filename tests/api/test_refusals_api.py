"""Refused credentials from outside, against a real `upcoach serve` (auth on, no model): the per-address brake
answers 429 before authentication, the address is the TCP peer unless a trusted proxy forwards, and the audit
trail holds one aggregated row per address and minute (written when the minute ends, or at shutdown).

Clients bind distinct loopback addresses (127.0.0.2, 127.0.0.3), so the server sees them as different peers.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.api.test_privacy_api import create_keys
from tests.conftest import start_server, stop_server
from upcoach.config import Settings
from upcoach.observability.audit import AuditLog, audit_key_from_settings
from upcoach.security.keys import Role
from upcoach.storage.audit import AuditEvent, AuditRepository
from upcoach.storage.database import Database

LIMIT = 5
BAD = "uc_0123456789abcdef_" + "x" * 43
PROXY = "127.0.0.3"


def client(server_url: str, address: str) -> httpx.Client:
    return httpx.Client(base_url=server_url, transport=httpx.HTTPTransport(local_address=address), timeout=30)


def bearer(key: str, forwarded_for: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    return {**headers, "X-Forwarded-For": forwarded_for} if forwarded_for else headers


async def refusal_rows(data_dir: Path) -> tuple[list[AuditEvent], bool]:
    settings = Settings(data_dir=data_dir)
    db = Database(settings.effective_database_url)
    try:
        key = audit_key_from_settings(settings, create=False)
        assert key is not None
        audit = AuditLog(AuditRepository(db), key)
        return await audit.query(action="auth.refused", limit=1000), (await audit.verify()).ok
    finally:
        await db.dispose()


def test_refusals_are_braked_per_peer_before_authentication_and_aggregated(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("refusals")
    keys = asyncio.run(create_keys(tmp / "data", {"alice": Role.user}))
    server = start_server(tmp, {
        "UPCOACH_AUTH": "on", "UPCOACH_LOAD_MODEL": "false", "UPCOACH_AUTH_REFUSALS_PER_MINUTE": str(LIMIT),
        "UPCOACH_TRUSTED_PROXIES": PROXY,
    }, wait_for="/healthz")  # fmt: skip
    try:
        with client(server.base_url, "127.0.0.2") as guesser, client(server.base_url, "127.0.0.1") as other, \
                client(server.base_url, PROXY) as proxy:  # fmt: skip
            codes = [guesser.get("/v1/models", headers=bearer(BAD)).status_code for _ in range(LIMIT)]
            assert codes == [401] * LIMIT
            braked = guesser.get("/v1/models", headers=bearer(BAD))
            assert braked.status_code == 429 and braked.json()["error"]["code"] == "auth_throttled"
            assert int(braked.headers["retry-after"]) >= 1
            # Before authentication: even a good key waits, from this address only.
            assert guesser.get("/v1/models", headers=bearer(keys["alice"])).status_code == 429
            # X-Forwarded-For from a peer that is not a trusted proxy is ignored (uvicorn's own default would
            # believe it from 127.0.0.1): it cannot shift the blame, nor escape the brake.
            assert other.get("/v1/models", headers=bearer(keys["alice"], "127.0.0.2")).status_code == 200
            assert guesser.get("/v1/models", headers=bearer(keys["alice"], "192.0.2.77")).status_code == 429

            # Behind the trusted proxy each forwarded client has its own brake.
            for _ in range(LIMIT):
                assert proxy.get("/v1/models", headers=bearer(BAD, "203.0.113.9")).status_code == 401
            assert proxy.get("/v1/models", headers=bearer(keys["alice"], "203.0.113.9")).status_code == 429
            assert proxy.get("/v1/models", headers=bearer(keys["alice"], "203.0.113.10")).status_code == 200
    finally:
        stop_server(server)  # a graceful stop writes the refusals of the minute still open

    rows, chain_ok = asyncio.run(refusal_rows(tmp / "data"))
    assert chain_ok
    # One row per address and minute (the test may straddle a minute boundary), never one per refusal.
    assert len(rows) == len({(row.target, row.details["minute"]) for row in rows}) <= 4
    counts: Counter[str] = Counter()
    statuses: dict[str, Counter[str]] = {}
    for row in rows:
        counts[str(row.target)] += int(row.details["count"])  # type: ignore[call-overload]
        statuses.setdefault(str(row.target), Counter()).update(row.details["statuses"])  # type: ignore[arg-type]
    assert counts == {"127.0.0.2": LIMIT + 3, "203.0.113.9": LIMIT + 1}
    assert statuses["127.0.0.2"] == {"401": LIMIT, "429": 3}
