"""/readyz tells strangers only whether the server is ready; why not, and its engine figures, are for admins and
auditors. A real app in process with auth on, keys of every role; ready with a FaultServer pool as its local side,
unavailable without any model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.storage.keys import ApiKeyRepository

ROLES = {"user": Role.user, "coach": Role.coach, "service": Role.service, "admin": Role.admin, "auditor": Role.auditor}
SEES_DETAILS = {"admin", "auditor"}


def served(tmp: Path, **settings: object) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app = create_app(Settings(data_dir=tmp, load_model=False, auth="on", redis_url=None, **settings))  # type: ignore[arg-type]
    with TestClient(app) as client:
        keys = ApiKeys(ApiKeyRepository(app.state.services.db), app.state.audit_log)
        issued = {name: client.portal.call(keys.create, f"{name}-1", role).token for name, role in ROLES.items()}  # type: ignore[union-attr]
        yield client, issued


@pytest.fixture(scope="module")
def unready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    yield from served(tmp_path_factory.mktemp("unready"))


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    with FaultServer() as pool:
        for client, issued in served(tmp_path_factory.mktemp("ready"), pool_urls=[pool.url], pool_role="local",
                                     pool_model="ok"):  # fmt: skip
            yield client, issued, pool.url


@pytest.mark.parametrize("who", [None, *ROLES])
def test_unready_says_why_only_to_admins_and_auditors(
    unready: tuple[TestClient, dict[str, str]], who: str | None
) -> None:
    client, keys = unready
    headers = {"Authorization": f"Bearer {keys[who]}"} if who else {}
    response = client.get("/readyz", headers=headers)
    assert response.status_code == 503
    if who in SEES_DETAILS:
        assert response.json()["status"] == "unavailable" and response.json()["reasons"]
    else:
        assert response.json() == {"status": "unavailable"}


@pytest.mark.parametrize("who", [None, *ROLES])
def test_ready_shows_engine_figures_only_to_admins_and_auditors(
    ready: tuple[TestClient, dict[str, str], str], who: str | None
) -> None:
    client, keys, pool_url = ready
    headers = {"Authorization": f"Bearer {keys[who]}"} if who else {}
    response = client.get("/readyz", headers=headers)
    assert response.status_code == 200
    if who in SEES_DETAILS:
        body = response.json()
        assert body["status"] == "ready" and "model" in body and "local" in body
    else:
        assert response.json() == {"status": "ready"}
        assert pool_url not in response.text


def test_refused_credentials_on_readyz_are_a_401(unready: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = unready
    response = client.get("/readyz", headers={"Authorization": "Bearer uc_0123456789abcdef_" + "x" * 43})
    assert response.status_code == 401
