"""API keys on SQLite and PostgreSQL: creation, hashed storage, verification, revocation, the CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from tests.storage import conftest as storage_fixtures
from upcoach.cli import app as cli_app
from upcoach.errors import NotFound, Unauthorized
from upcoach.observability.audit import AuditLog
from upcoach.security import keys as keys_module
from upcoach.security.keys import ApiKeys, Refused, Role, parse_token
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository

# The storage suite's fixtures: each test runs on SQLite and on a throwaway PostgreSQL database.
postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db

on_session_loop = pytest.mark.asyncio(loop_scope="session")

TOKEN = re.compile(r"uc_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
AUDIT_KEY = bytes(range(32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_keys(db: Database, clock: FakeClock | None = None) -> tuple[ApiKeys, AuditLog]:
    audit = AuditLog(AuditRepository(db), AUDIT_KEY)
    return ApiKeys(ApiKeyRepository(db), audit, monotonic=clock or FakeClock()), audit


async def raw_rows(db: Database) -> list[dict[str, object]]:
    async with db.engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(text("SELECT * FROM api_keys"))]


@on_session_loop
async def test_create_returns_a_key_that_verifies_and_stores_only_a_digest(migrated_db: Database) -> None:
    keys, _ = make_keys(migrated_db)
    issued = await keys.create("alice", Role.coach)

    match = TOKEN.fullmatch(issued.token)
    assert match is not None, issued.token
    key_id, secret = match.groups()
    assert key_id == issued.key.id
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert parse_token(issued.token) == (key_id, secret)

    key = await keys.verify(issued.token)
    assert (key.id, key.user_id, key.role, key.revoked) == (key_id, "alice", Role.coach, False)

    [row] = await raw_rows(migrated_db)
    assert row["id"] == key_id
    assert row["user_id"] == "alice"
    assert row["role"] == "coach"
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    # Neither the secret nor the whole key appears in any column.
    assert not any(secret in str(value) or issued.token in str(value) for value in row.values())


@on_session_loop
async def test_wrong_unknown_and_malformed_keys_are_refused(migrated_db: Database) -> None:
    keys, _ = make_keys(migrated_db)
    issued = await keys.create("bob", Role.user)
    key_id, secret = parse_token(issued.token) or ("", "")
    flipped = ("A" if secret[0] != "A" else "B") + secret[1:]

    with pytest.raises(Refused) as wrong:
        await keys.verify(f"uc_{key_id}_{flipped}")
    assert (wrong.value.reason, wrong.value.key_id, wrong.value.user_id) == ("wrong_secret", key_id, "bob")
    assert isinstance(wrong.value, Unauthorized) and wrong.value.status == 401

    with pytest.raises(Refused) as unknown:
        await keys.verify(f"uc_{'0' * 16}_{secret}")
    assert (unknown.value.reason, unknown.value.user_id) == ("unknown_key", None)

    for malformed in ("uc_xyz_abc", issued.token[:-5], "sk-" + secret, issued.token + "!"):
        with pytest.raises(Refused) as bad:
            await keys.verify(malformed)
        assert bad.value.reason == "malformed_key", malformed


@on_session_loop
async def test_secrets_are_compared_in_constant_time(migrated_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    keys, _ = make_keys(migrated_db)
    issued = await keys.create("carol", Role.user)
    _, secret = parse_token(issued.token) or ("", "")
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    await keys.verify(issued.token)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert calls == [(digest, digest)]

    with pytest.raises(Refused):
        await keys.verify(issued.token[:-1] + ("x" if issued.token[-1] != "x" else "y"))
    assert len(calls) == 2 and calls[1][0] == digest and calls[1][1] != digest


@on_session_loop
async def test_revoke_refuses_the_key_from_then_on_and_is_audited_once(migrated_db: Database) -> None:
    keys, audit = make_keys(migrated_db)
    issued = await keys.create("dave", Role.admin)
    other = await keys.create("erin", Role.auditor)

    revoked = await keys.revoke(issued.key.id, actor="root", actor_role="admin")
    assert revoked.revoked and revoked.revoked_at is not None
    with pytest.raises(Refused) as refused:
        await keys.verify(issued.token)
    assert (refused.value.reason, refused.value.user_id, refused.value.role) == ("revoked_key", "dave", "admin")
    assert (await keys.verify(other.token)).user_id == "erin"

    again = await keys.revoke(issued.key.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await keys.revoke("0" * 16)

    events = await audit.query()
    assert [(e.action, e.target, e.actor, e.actor_role) for e in events] == [
        ("key.created", issued.key.id, "system", "system"),
        ("key.created", other.key.id, "system", "system"),
        ("key.revoked", issued.key.id, "root", "admin"),
    ]
    assert events[0].details == {"user_id": "dave", "role": "admin"}
    assert (await audit.verify()).ok

    listed = {key.id: key for key in await keys.list()}
    assert set(listed) == {issued.key.id, other.key.id}
    assert listed[issued.key.id].revoked and not listed[other.key.id].revoked
    assert not hasattr(listed[issued.key.id], "secret_hash")


@on_session_loop
async def test_last_used_is_written_at_most_once_a_minute(migrated_db: Database) -> None:
    clock = FakeClock()
    keys, _ = make_keys(migrated_db, clock)
    issued = await keys.create("frank", Role.user)
    repository = ApiKeyRepository(migrated_db)
    assert (await repository.get(issued.key.id)).last_used_at is None  # type: ignore[union-attr]

    await keys.verify(issued.token)
    first = (await repository.get(issued.key.id)).last_used_at  # type: ignore[union-attr]
    assert first is not None

    await asyncio.sleep(0.01)
    clock.now += 59
    await keys.verify(issued.token)
    assert (await repository.get(issued.key.id)).last_used_at == first  # type: ignore[union-attr]

    clock.now += 2
    await keys.verify(issued.token)
    later = (await repository.get(issued.key.id)).last_used_at  # type: ignore[union-attr]
    assert later is not None and later > first


def test_cli_creates_lists_and_revokes_keys(db: Database, database_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"UPCOACH_DATA_DIR": str(tmp_path / "data"), "UPCOACH_DATABASE_URL": database_url, "UPCOACH_AUDIT_KEY": None}

    created = runner.invoke(cli_app, ["keys", "create", "--user", "grace", "--role", "auditor"], env=env)
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]
    match = TOKEN.fullmatch(token)
    assert match is not None, created.output
    key_id, secret = match.groups()
    # The audit key was generated into the data folder on first use.
    assert (tmp_path / "data" / "audit.key").stat().st_mode & 0o777 == 0o600

    async def check() -> tuple[str, Role]:
        database = Database(database_url)
        try:
            keys, _ = make_keys(database)
            key = await keys.verify(token)
            return key.user_id, key.role
        finally:
            await database.dispose()

    assert asyncio.run(check()) == ("grace", Role.auditor)

    listed = runner.invoke(cli_app, ["keys", "list"], env={**env, "COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert key_id in listed.output and "grace" in listed.output and "auditor" in listed.output
    assert secret not in listed.output

    revoked = runner.invoke(cli_app, ["keys", "revoke", key_id], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert f"key {key_id} revoked at" in revoked.output
    with pytest.raises(Refused):
        asyncio.run(check())

    missing = runner.invoke(cli_app, ["keys", "revoke", "0" * 16], env=env)
    assert missing.exit_code == 1
    assert "no API key" in missing.output

    bad_role = runner.invoke(cli_app, ["keys", "create", "--user", "x", "--role", "root"], env=env)
    assert bad_role.exit_code == 2
