"""Authentication and roles: API keys and JWTs (HS256, RS256, ES256), dev mode, refusals audited, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from starlette.requests import Request

from tests.storage import conftest as storage_fixtures
from upcoach.api import errors as api_errors
from upcoach.config import Settings
from upcoach.errors import Forbidden, Unauthorized
from upcoach.observability.audit import AuditLog
from upcoach.security.auth import (
    DEV_PRINCIPAL,
    Authenticator,
    AuthFailure,
    Principal,
    announce_auth_mode,
    require,
)
from upcoach.security.keys import ApiKeys, Refused, Role
from upcoach.security.refusals import RefusalLog
from upcoach.storage.audit import AuditRepository
from upcoach.storage.database import Database
from upcoach.storage.keys import ApiKeyRepository

postgres_url = storage_fixtures.postgres_url
database_url = storage_fixtures.database_url
db = storage_fixtures.db
migrated_db = storage_fixtures.migrated_db

on_session_loop = pytest.mark.asyncio(loop_scope="session")

SECRET = "hs256-test-secret-with-more-than-32-bytes"
AUDIENCE = "upcoach-ai"
ISSUER = "upcoach-backend"


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}", **overrides)  # type: ignore[arg-type]


def request_with(headers: dict[str, str], path: str = "/v1/chat/completions") -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "path": path,
        "root_path": "",
        "query_string": b"q=secret-looking",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("10.1.2.3", 40000),
    }
    return Request(scope)


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "user-42", "iat": now, "exp": now + 300, "aud": AUDIENCE, "iss": ISSUER, **extra}


def rsa_pair() -> tuple[rsa.RSAPrivateKey, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem.decode()


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, str]:
    return rsa_pair()


class Recorder:
    def __init__(self) -> None:
        self.failures: list[AuthFailure] = []

    async def __call__(self, failure: AuthFailure) -> None:
        self.failures.append(failure)


def jwt_authenticator(tmp_path: Path, recorder: Recorder | None = None, **overrides: object) -> Authenticator:
    settings = settings_for(tmp_path, jwt_audience=AUDIENCE, jwt_issuer=ISSUER, **overrides)
    database = Database(settings.effective_database_url)  # never touched: JWTs need no database
    keys = ApiKeys(ApiKeyRepository(database), AuditLog(AuditRepository(database), bytes(32)))
    return Authenticator(settings, keys, on_failure=recorder)


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
async def test_jwt_valid_expired_wrong_audience_bad_signature(
    algorithm: str, tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, str]
) -> None:
    private, public_pem = rsa_keys
    if algorithm == "HS256":
        signing_key: object = SECRET
        impostor: object = SECRET + "-but-not-quite"
        config: dict[str, object] = {"jwt_secret": SECRET}
    else:
        signing_key, impostor = private, rsa_pair()[0]
        config = {"jwt_public_key": public_pem}
    recorder = Recorder()
    auth = jwt_authenticator(tmp_path, recorder, **config)

    def bearer(payload: dict[str, object], key: object = signing_key) -> Request:
        return request_with({"Authorization": f"Bearer {jwt.encode(payload, key, algorithm=algorithm)}"})  # type: ignore[arg-type]

    principal = await auth.authenticate(bearer(claims(role="coach")))
    assert principal == Principal("user-42", Role.coach, None, "jwt")
    assert await auth.authenticate(bearer(claims())) == Principal("user-42", Role.user, None, "jwt")

    now = int(time.time())
    cases = {
        "token_expired": claims(exp=now - 120),
        "token_audience": claims(aud="someone-else"),
        "token_issuer": claims(iss="evil"),
        "token_invalid": {k: v for k, v in claims().items() if k != "exp"},
        "token_role": claims(role="superuser"),
    }
    for reason, payload in cases.items():
        with pytest.raises(Refused) as refused:
            await auth.authenticate(bearer(payload))
        assert refused.value.reason == reason
    with pytest.raises(Refused) as forged:
        await auth.authenticate(bearer(claims(), impostor))
    assert forged.value.reason == "token_signature"
    assert forged.value.status == 401 and forged.value.headers == {"WWW-Authenticate": "Bearer"}

    assert [f.reason for f in recorder.failures] == [*cases, "token_signature"]
    assert all(f.status == 401 and f.path == "/v1/chat/completions" for f in recorder.failures)
    assert all(f.client == "10.1.2.3" and f.user_id is None for f in recorder.failures[:-2])


async def test_expired_token_says_so(tmp_path: Path) -> None:
    auth = jwt_authenticator(tmp_path, jwt_secret=SECRET)
    token = jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized) as refused:
        await auth.authenticate(request_with({"Authorization": f"Bearer {token}"}))
    assert refused.value.message == "token expired"


async def test_es256_and_public_key_from_a_file(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "backend.pem").write_bytes(pem)
    auth = jwt_authenticator(tmp_path, jwt_public_key=str(tmp_path / "backend.pem"))
    token = jwt.encode(claims(role="auditor"), private, algorithm="ES256")
    principal = await auth.authenticate(request_with({"Authorization": f"Bearer {token}"}))
    assert principal == Principal("user-42", Role.auditor, None, "jwt")


async def test_algorithm_confusion_and_unconfigured_algorithms_are_refused(
    tmp_path: Path, rsa_keys: tuple[rsa.RSAPrivateKey, str]
) -> None:
    _, public_pem = rsa_keys
    auth = jwt_authenticator(tmp_path, jwt_public_key=public_pem)
    # The classic attack: an HS256 token whose HMAC key is the server's public key.
    forged = _hs256_with_raw_key(claims(), public_pem.encode())
    with pytest.raises(Refused) as refused:
        await auth.authenticate(request_with({"Authorization": f"Bearer {forged}"}))
    assert refused.value.reason == "token_algorithm"

    unsigned = jwt.encode(claims(), None, algorithm="none")
    with pytest.raises(Refused) as none_alg:
        await auth.authenticate(request_with({"Authorization": f"Bearer {unsigned}"}))
    assert none_alg.value.reason == "token_algorithm"


def _hs256_with_raw_key(payload: dict[str, object], key: bytes) -> str:
    """HS256 by hand: PyJWT refuses to use a PEM as an HMAC key, which is exactly what an attacker would do."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def test_short_hs256_secret_and_non_p256_keys_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        jwt_authenticator(tmp_path, jwt_secret="short")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = p384.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ValueError, match="RSA or EC P-256"):
        jwt_authenticator(tmp_path, jwt_public_key=pem)


async def test_auth_off_makes_everyone_the_dev_admin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(tmp_path, auth="off")
    database = Database(settings.effective_database_url)
    keys = ApiKeys(ApiKeyRepository(database), AuditLog(AuditRepository(database), bytes(32)))
    auth = Authenticator(settings, keys)
    assert await auth.authenticate(request_with({})) == Principal("dev", Role.admin, None, "dev")
    assert await auth.authenticate(request_with({"X-API-Key": "garbage"})) is DEV_PRINCIPAL

    with caplog.at_level(logging.INFO, logger="upcoach.security.auth"):
        announce_auth_mode(settings)
        announce_auth_mode(settings_for(tmp_path, jwt_secret=SECRET))
    assert [(r.levelname, "OFF" in r.getMessage()) for r in caplog.records] == [("WARNING", True), ("INFO", False)]
    assert caplog.records[1].getMessage() == "authentication on: API keys, HS256 tokens"


# --- over HTTP, with API keys in the database ---------------------------------------------------------------------


def tiny_app(authenticator: Authenticator) -> FastAPI:
    app = FastAPI()
    api_errors.install(app)
    app.state.authenticator = authenticator

    def as_json(principal: Principal) -> dict[str, object]:
        return {"user": principal.user_id, "role": principal.role.value, "via": principal.via, "key": principal.key_id}

    @app.get("/anyone")
    async def anyone(principal: Principal = Depends(require())) -> dict[str, object]:  # noqa: B008
        return as_json(principal)

    @app.get("/coaching")
    async def coaching(principal: Principal = Depends(require(Role.user, Role.coach))) -> dict[str, object]:  # noqa: B008
        return as_json(principal)

    @app.get("/audit", dependencies=[Depends(require(Role.auditor))])
    async def audit(request: Request) -> dict[str, object]:
        return as_json(request.state.principal)

    return app


Http = tuple[httpx.AsyncClient, ApiKeys, AuditLog, RefusalLog]


@pytest.fixture
async def http(migrated_db: Database, tmp_path: Path) -> AsyncIterator[Http]:
    audit = AuditLog(AuditRepository(migrated_db), bytes(range(32)))
    keys = ApiKeys(ApiKeyRepository(migrated_db), audit)
    settings = settings_for(tmp_path, jwt_secret=SECRET)
    refusals = RefusalLog(audit)
    app = tiny_app(Authenticator(settings, keys, on_failure=refusals.record))
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, keys, audit, refusals


@on_session_loop
async def test_roles_over_http(http: Http) -> None:
    client, keys, audit, refusals = http
    user = await keys.create("u1", Role.user)
    auditor = await keys.create("a1", Role.auditor)
    admin = await keys.create("root", Role.admin)

    ok = await client.get("/coaching", headers={"Authorization": f"Bearer {user.token}"})
    assert ok.status_code == 200
    assert ok.json() == {"user": "u1", "role": "user", "via": "api_key", "key": user.key.id}

    # X-API-Key works as well; the route reads the principal from request.state.
    assert (await client.get("/audit", headers={"X-API-Key": auditor.token})).json()["user"] == "a1"

    denied = await client.get("/audit", headers={"Authorization": f"Bearer {user.token}"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert denied.json()["error"]["message"] == "this needs the auditor role; the caller has user"
    assert (await client.get("/coaching", headers={"X-API-Key": auditor.token})).status_code == 403

    # Admin passes every role check.
    for path in ("/anyone", "/coaching", "/audit"):
        response = await client.get(path, headers={"Authorization": f"Bearer {admin.token}"})
        assert response.status_code == 200 and response.json()["role"] == "admin", path

    unscoped = {name: value for name, value in claims(role="coach").items() if name not in ("aud", "iss")}
    token = jwt.encode(unscoped, SECRET, algorithm="HS256")
    via_jwt = await client.get("/coaching", headers={"Authorization": f"Bearer {token}"})
    assert via_jwt.json() == {"user": "user-42", "role": "coach", "via": "jwt", "key": None}

    # Refusals are counted in memory and written as one row per client address and minute.
    assert await audit.query(action="auth.refused") == []
    assert await refusals.flush(everything=True) == 1
    (event,) = await audit.query(action="auth.refused")
    assert (event.actor, event.actor_role, event.target) == ("anonymous", "none", "10.9.8.7")
    minute = event.details.pop("minute")
    assert isinstance(minute, str) and minute.endswith(":00+00:00")
    assert event.details == {
        "client": "10.9.8.7",
        "count": 2,
        "reasons": {"role": 2},
        "statuses": {"403": 2},
        "paths": ["/audit", "/coaching"],
        "key_ids": [user.key.id, auditor.key.id],
        "user_ids": ["u1", "a1"],
    }


@on_session_loop
async def test_missing_invalid_and_revoked_credentials_are_401(
    http: Http,
) -> None:
    client, keys, audit, refusals = http
    issued = await keys.create("u2", Role.user)
    await keys.revoke(issued.key.id)

    missing = await client.get("/anyone")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.json()["error"]["type"] == "authentication_error"

    cases = {
        "revoked_key": {"Authorization": f"Bearer {issued.token}"},
        "malformed_key": {"X-API-Key": "uc_nope"},
        "unsupported_scheme": {"Authorization": "Basic dTpw"},
        "unknown_credential": {"Authorization": "Bearer sk-something-else"},
    }
    for reason, headers in cases.items():
        response = await client.get("/anyone", headers=headers)
        assert response.status_code == 401, reason
        assert response.json()["error"]["message"] in (
            "invalid API key or token",
            "use Authorization: Bearer <API key or token>",
        )

    await refusals.flush(everything=True)
    (refused,) = await audit.query(action="auth.refused")
    # The request without credentials is not a login attempt and is not recorded.
    assert refused.details["count"] == len(cases) and refused.details["reasons"] == dict.fromkeys(cases, 1)
    # The revoked key named its owner: the row is in their export (details.user_id).
    assert (refused.details["key_ids"], refused.details["user_ids"]) == ([issued.key.id], ["u2"])
    assert refused.details["user_id"] == "u2"
    assert (await audit.verify()).ok


@on_session_loop
async def test_401_carries_www_authenticate(http: Http) -> None:
    client, _, _, _ = http
    assert (await client.get("/anyone")).headers.get("www-authenticate") == "Bearer"


@on_session_loop
async def test_an_audit_outage_still_refuses(migrated_db: Database, tmp_path: Path) -> None:
    keys = ApiKeys(ApiKeyRepository(migrated_db), AuditLog(AuditRepository(migrated_db), bytes(32)))

    async def broken(_: AuthFailure) -> None:
        raise ConnectionError("audit database down")

    auth = Authenticator(settings_for(tmp_path), keys, on_failure=broken)
    with pytest.raises(Refused):
        await auth.authenticate(request_with({"X-API-Key": "uc_0000000000000000_" + "a" * 43}))
    with pytest.raises(Forbidden):
        await auth.authorize(request_with({}), Principal("u", Role.user), {Role.auditor})


async def test_require_fails_closed_without_an_authenticator() -> None:
    app = FastAPI()

    @app.get("/x", dependencies=[Depends(require())])
    async def x() -> dict[str, str]:
        return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(RuntimeError, match="app.state.authenticator"):
            await client.get("/x")
