"""Ratings cannot be stuffed: a rating counts only for a request its user was served (a request record with outcome
ok for that user), once per request, in both the answer ratings and the model-version A/B comparison.

A real app in process with auth on, real SQLite and API keys; its local side is a FaultServer pool. Records the
tests need in a given state (an error outcome) are inserted through the repository.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.llm.base import ChatMessage, ChatRequest, Completion, Usage
from upcoach.modelstore.versions_ab import VersionExperiment
from upcoach.security.keys import ApiKeys, Role
from upcoach.services import Services
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRecord


@dataclass
class Site:
    app: FastAPI
    client: TestClient
    keys: dict[str, str]

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    def post(self, path: str, who: str, body: dict[str, Any], as_user: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        if as_user is not None:
            headers["X-User-Id"] = as_user
        return self.client.post(path, headers=headers, json=body)

    def served(self, who: str, as_user: str | None = None) -> str:
        """A request answered for ``who`` (or the user named), once its record is written (in the background)."""
        body = {"messages": [{"role": "user", "content": "One tip to sleep better?"}], "maxTokens": 8}
        answer = self.post("/api/ai/hybrid/process", who, body, as_user)
        assert answer.status_code == 200, answer.text
        request_id: str = answer.json()["requestId"]
        deadline = time.monotonic() + 30
        while self.client.portal.call(self.services.requests.get, request_id) is None:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the request record was never written"
            time.sleep(0.05)
        return request_id


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with FaultServer() as pool:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("ratings"), load_model=False, redis_url=None, auth="on",
            pool_urls=[pool.url], pool_role="local", pool_model="ok", rate_limit_burst=100_000,
        )  # fmt: skip
        app = create_app(settings)
        with TestClient(app) as client:
            services: Services = app.state.services
            keys = ApiKeys(ApiKeyRepository(services.db), app.state.audit_log)
            issued = {
                user: client.portal.call(keys.create, user, role).token  # type: ignore[union-attr]
                for user, role in (("alice", Role.user), ("bob", Role.user), ("app", Role.service))
            }
            yield Site(app, client, issued)


def test_only_a_request_served_ok_to_the_rater_can_be_rated_once(site: Site) -> None:
    request_id = site.served("alice")
    assert site.post("/api/ai/feedback", "bob", {"requestId": request_id, "rating": 1}).status_code == 404
    first = site.post("/api/ai/feedback", "alice", {"requestId": request_id, "rating": 1})
    assert first.status_code == 201, first.text
    again = site.post("/api/ai/feedback", "alice", {"requestId": request_id, "rating": 5})
    assert again.status_code == 200 and again.json()["rating"] == 5
    failed = RequestRecord(id="req_failed", user_id="alice", endpoint="hybrid", privacy_level="private",
                           decision="local", processing_mode="none", backend="none", outcome="error",
                           latency_ms=3.0, error_code="local_unavailable")  # fmt: skip
    site.client.portal.call(site.services.requests.add, failed)  # type: ignore[union-attr]
    # A request that was never answered is no answer to rate.
    refused = site.post("/api/ai/feedback", "alice", {"requestId": "req_failed", "rating": 1})
    assert refused.status_code == 404, refused.text
    summary = site.client.portal.call(site.services.ratings.summary)  # type: ignore[union-attr]
    assert summary["count"] == 1 and summary["averageRating"] == 5


def _answer(experiment: VersionExperiment, version: str, request_id: str, user: str) -> None:
    """What the serving backend reports to the running test when ``version`` answered ``request_id``."""
    request = ChatRequest((ChatMessage("user", "hi"),), request_id=request_id, user_id=user)
    experiment.observe(version, request, Completion("hi", "stop", Usage(1, 1), "m", first_token_ms=1, total_ms=2))


def test_version_ab_counts_only_ratings_of_served_requests(site: Site) -> None:
    manager = site.services.models
    assert manager is not None
    experiment = VersionExperiment("m@1", "m@2", 0.5)
    manager.experiment = experiment
    try:
        mine = site.served("alice")
        _answer(experiment, "m@2", mine, "alice")
        # Naming a version instead of a served request is not a rating any more.
        by_version = site.post("/api/ai/models/ab/rating", "alice", {"version": "m@2", "rating": 5})
        assert by_version.status_code == 400, by_version.text
        assert site.post("/api/ai/models/ab/rating", "bob", {"requestId": mine, "rating": 1}).status_code == 404
        for rating in (1, 1, 4):
            rated = site.post("/api/ai/models/ab/rating", "alice", {"requestId": mine, "rating": rating})
            assert rated.status_code == 200 and rated.json() == {"version": "m@2", "rating": rating}, rated.text
        # The app's backend rates for the user it acts for.
        theirs = site.served("app", as_user="carol")
        _answer(experiment, "m@1", theirs, "carol")
        assert site.post("/api/ai/models/ab/rating", "app", {"requestId": theirs, "rating": 2}).status_code == 404
        on_behalf = site.post("/api/ai/models/ab/rating", "app", {"requestId": theirs, "rating": 2}, as_user="carol")
        assert on_behalf.status_code == 200, on_behalf.text
        versions = experiment.to_json()["versions"]
        assert versions["m@2"]["ratings"]["count"] == 1 and versions["m@2"]["ratings"]["mean"] == 4.0  # type: ignore[index]
        assert versions["m@1"]["ratings"]["count"] == 1  # type: ignore[index]
    finally:
        manager.experiment = None
