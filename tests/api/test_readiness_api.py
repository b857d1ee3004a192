"""/readyz tells strangers only whether the server is ready; why not, and its engine figures, are for admins and
auditors. A real app in process with auth on, keys of every role; ready with a FaultServer pool as its local side,
unavailable without any model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from tests.observability.test_records import outcome
from tests.storage.outage import Outage
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


def test_unwritten_records_beyond_the_bound_make_the_server_unready(tmp_path: Path) -> None:
    """The database goes away for real (its file is moved aside) while requests keep finishing: once more records
    wait than UPCOACH_RECORDS_BACKLOG_MAX, /readyz says so by name; written again, the server is ready again."""
    settings = Settings(data_dir=tmp_path, load_model=False, auth="off", redis_url=None, records_backlog_max=2,
                        pool_role="local", pool_model="ok")  # fmt: skip
    with FaultServer() as pool:
        settings.pool_urls = [pool.url]
        with TestClient(create_app(settings)) as client:
            services = client.app.state.services  # type: ignore[attr-defined]
            assert client.get("/readyz").status_code == 200
            outage = Outage(settings.effective_database_url, tmp_path)
            client.portal.call(outage.stop, services.db)  # type: ignore[union-attr]
            for n in range(3):
                client.portal.call(services.records.submit, outcome(f"r{n}"))  # type: ignore[union-attr]
            response = client.get("/readyz")
            assert response.status_code == 503
            assert any(reason.startswith("records_backlog:") for reason in response.json()["reasons"])

            client.portal.call(outage.restore)  # type: ignore[union-attr]
            client.portal.call(services.records.flush)  # type: ignore[union-attr]
            assert client.get("/readyz").status_code == 200
            assert {record.id for record in client.portal.call(services.requests.all_for_user, "u1")} == {  # type: ignore[union-attr]
                "r0",
                "r1",
                "r2",
            }
