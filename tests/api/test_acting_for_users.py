"""Who may act for whom, table-driven: a credential of every role (and dev mode) against every route that names a
user (X-User-Id, ``?user=``, or the OpenAI body's ``user``).

A real app in process with auth on, real SQLite, real API keys and HS256 tokens; its local side is a FaultServer
pool (the model is not what these tests are about). The expected answers are written out below, not derived from
the code's table, so a change to who may do what has to change this file too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.fakes.fault_server import FaultServer
from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.services import Services
from upcoach.storage.audit import AuditEvent, AuditRepository
from upcoach.storage.grants import GrantRepository
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.tables import CoachGrantRow

JWT_SECRET = "acting-for-users-test-secret-of-32+-bytes"
COACH = "carol-coach"
VIEWED, ACTED = "data.viewed", "data.acted_for"
ALLOW, FORBIDDEN, NO_GRANT = "allow", "forbidden", "grant_required"
IGNORED = "ignored"  # the OpenAI body's "user" from a caller who may not name users: a tag, served as the caller
CHAT = {"messages": [{"role": "user", "content": "One tip to sleep better?"}], "maxTokens": 8}


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    kind: str  # which column of EXPECTED decides: act, journal, insights, requests, privacy
    action: str  # the audit action when allowed
    json: Any = None
    named_by: str = "header"  # header, query (?user=) or body (OpenAI "user")
    params: dict[str, str] = field(default_factory=dict)


ROUTES = [
    Route("openai chat", "POST", "/v1/chat/completions", "act", ACTED,
          {"model": "default", "messages": CHAT["messages"], "max_tokens": 8}),
    Route("openai chat, body user", "POST", "/v1/chat/completions", "act", ACTED,
          {"model": "default", "messages": CHAT["messages"], "max_tokens": 8}, named_by="body"),
    Route("hybrid process", "POST", "/api/ai/hybrid/process", "act", ACTED, CHAT),
    Route("hybrid route", "POST", "/api/ai/hybrid/route", "act", ACTED, CHAT),
    Route("suggestion chips", "POST", "/api/coach/suggestions", "act", ACTED, {**CHAT, "maxTokens": None}),
    Route("journal add", "POST", "/api/journal/entries", "act", ACTED,
          {"transcript": "A calm day.", "recordedAt": "2026-11-20T21:30:00Z", "mood": 4}),
    Route("journal list", "GET", "/api/journal/entries", "journal", VIEWED),
    Route("journal delete", "DELETE", f"/api/journal/entries/{'0' * 32}", "act", ACTED),
    Route("journal insights", "GET", "/api/journal/insights", "insights", VIEWED),
    Route("feedback", "POST", "/api/ai/feedback", "act", ACTED, {"requestId": "req_unknown", "rating": 4}),
    Route("experiment assignment", "GET", "/api/experiments/no-such/assignment", "act", ACTED),
    Route("experiment event", "POST", "/api/experiments/no-such/events", "act", ACTED, {"metric": "m"}),
    Route("version A/B rating", "POST", "/api/ai/models/ab/rating", "act", ACTED,
          {"requestId": "req_unknown", "rating": 4}),
    Route("usage summary", "GET", "/api/ai/usage/summary", "requests", VIEWED),
    Route("usage summary, ?user=", "GET", "/api/ai/usage/summary", "requests", VIEWED, named_by="query"),
    Route("request records", "GET", "/api/ai/requests", "requests", VIEWED),
    Route("request records, ?user=", "GET", "/api/ai/requests", "requests", VIEWED, named_by="query"),
    Route("privacy settings", "GET", "/api/privacy/settings", "privacy", VIEWED),
    Route("privacy settings change", "PUT", "/api/privacy/settings", "privacy", ACTED, {"analyticsOptIn": False}),
    Route("privacy export", "GET", "/api/privacy/export", "privacy", VIEWED),
    Route("privacy erase", "DELETE", "/api/privacy/data", "privacy", ACTED),
    Route("grant give", "POST", "/api/privacy/grants", "privacy", ACTED,
          {"coachId": "someone-else", "scopes": ["journal"]}),
    Route("grant list", "GET", "/api/privacy/grants", "privacy", VIEWED),
    Route("grant revoke", "DELETE", f"/api/privacy/grants/{'0' * 32}", "privacy", ACTED),
]  # fmt: skip

_COACH_WITHOUT = {"act": FORBIDDEN, "journal": NO_GRANT, "insights": NO_GRANT, "requests": NO_GRANT,
                  "privacy": FORBIDDEN}  # fmt: skip
_EVERYTHING = dict.fromkeys(("act", "journal", "insights", "requests", "privacy"), ALLOW)

# (credential, the user it names) -> what each kind of route answers.
CASES: dict[str, tuple[str, dict[str, str]]] = {
    "user": ("bob", dict.fromkeys(_EVERYTHING, FORBIDDEN)),
    "coach, no grant": ("bob", _COACH_WITHOUT),
    # alice granted journal and requests, not insights.
    "coach, granted": (
        "alice",
        {"act": FORBIDDEN, "journal": ALLOW, "insights": NO_GRANT, "requests": ALLOW, "privacy": FORBIDDEN},
    ),  # fmt: skip
    "coach, grant expired": ("dora", _COACH_WITHOUT),
    "coach, grant revoked": ("erin", _COACH_WITHOUT),
    "coach token, no grant": ("bob", _COACH_WITHOUT),
    "service": ("bob", {**_EVERYTHING, "privacy": FORBIDDEN}),
    "service token": ("bob", {**_EVERYTHING, "privacy": FORBIDDEN}),
    "admin": ("bob", _EVERYTHING),
    "auditor": ("bob", {**dict.fromkeys(_EVERYTHING, FORBIDDEN), "requests": ALLOW}),
}
# The OpenAI body's "user" names the subject only for callers who may act for users; others are served as
# themselves (it is an end-user tag in OpenAI's API), except auditors, who may not chat at all.
BODY_USER = {case: ALLOW if expected["act"] == ALLOW else IGNORED for case, (_, expected) in CASES.items()}
BODY_USER["auditor"] = FORBIDDEN
# Which principal each case is: (user id, role).
WHO = {
    "user": ("alice", Role.user),
    "service": ("app-backend", Role.service),
    "admin": ("root", Role.admin),
    "auditor": ("eve", Role.auditor),
}


@dataclass
class World:
    app: FastAPI
    client: TestClient
    credentials: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]

    def last_id(self) -> int:
        events = self.call(_all_events, self.services)
        return events[-1].id if events else 0

    def access_after(self, event_id: int) -> list[AuditEvent]:
        return [e for e in self.call(_all_events, self.services) if e.id > event_id and e.action in (VIEWED, ACTED)]


async def _all_events(services: Services) -> list[AuditEvent]:
    return [event async for event in AuditRepository(services.db).scan()]


def token(subject: str, role: str) -> str:
    return jwt.encode({"sub": subject, "role": role, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


def settings_for(tmp: Path, pool: FaultServer, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp, load_model=False, redis_url=None, pool_urls=[pool.url], pool_role="local", pool_model="ok",
        rate_limit_burst=100_000, rate_limit_per_minute=1_000_000, jwt_secret=JWT_SECRET, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pool() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pool: FaultServer) -> Iterator[World]:
    app = create_app(settings_for(tmp_path_factory.mktemp("acting"), pool, auth="on"))
    with TestClient(app) as client:
        services: Services = app.state.services
        keys = ApiKeys(ApiKeyRepository(services.db), app.state.audit_log)
        issued = {
            user: client.portal.call(keys.create, user, role).token  # type: ignore[union-attr]
            for user, role in [
                *WHO.values(),
                *((name, Role.user) for name in ("bob", "dora", "erin", "frank")),
                (COACH, Role.coach),
            ]  # fmt: skip
        }
        credentials = {case: issued[user] for case, (user, _) in WHO.items()}
        credentials.update({
            "coach, no grant": issued[COACH], "coach, granted": issued[COACH], "coach, grant expired": issued[COACH],
            "coach, grant revoked": issued[COACH], "coach token, no grant": token(COACH, "coach"),
            "service token": token("app-backend", "service"),
        })  # fmt: skip
        world = World(app, client, credentials, issued)

        def as_user(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {issued[user]}"}

        given = client.post("/api/privacy/grants", headers=as_user("alice"),
                            json={"coachId": COACH, "scopes": ["journal", "requests"]})  # fmt: skip
        assert given.status_code == 201, given.text
        revoked = client.post("/api/privacy/grants", headers=as_user("erin"), json={"coachId": COACH,
                              "scopes": ["journal", "insights", "requests"]})  # fmt: skip
        assert client.delete(f"/api/privacy/grants/{revoked.json()['id']}", headers=as_user("erin")).status_code == 204
        past = datetime.now(UTC) - timedelta(minutes=1)
        client.portal.call(partial(GrantRepository(services.db).add, CoachGrantRow(  # type: ignore[union-attr]
            id=uuid.uuid4().hex, user_id="dora", coach_id=COACH, scopes=["journal", "insights", "requests"],
            created_at=past - timedelta(days=1), expires_at=past, revoked_at=None,
        ), started_at=datetime.now(UTC)))  # fmt: skip
        yield world


@pytest.fixture(scope="module")
def dev_world(tmp_path_factory: pytest.TempPathFactory, pool: FaultServer) -> Iterator[World]:
    app = create_app(settings_for(tmp_path_factory.mktemp("acting-dev"), pool, auth="off"))
    with TestClient(app) as client:
        yield World(app, client, {})


def send(world: World, route: Route, credential: str | None, named: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    params = dict(route.params)
    body = route.json
    if route.named_by == "header":
        headers["X-User-Id"] = named
    elif route.named_by == "query":
        params["user"] = named
    else:
        body = {**body, "user": named}
    if body is not None and body.get("maxTokens", 0) is None:
        body = {k: v for k, v in body.items() if k != "maxTokens"}
    return world.client.request(route.method, route.path, headers=headers, params=params, json=body)


def check(world: World, route: Route, response: httpx.Response, expected: str, actor: str, named: str) -> None:
    if expected == IGNORED:
        assert response.status_code == 200, response.text
    elif expected == ALLOW:
        assert response.status_code != 403, response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == expected, response.text


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
@pytest.mark.parametrize("case", list(CASES))
def test_every_role_against_every_route_that_names_a_user(world: World, case: str, route: Route) -> None:
    named, expectations = CASES[case]
    expected = BODY_USER[case] if route.named_by == "body" else expectations[route.kind]
    actor = WHO[case][0] if case in WHO else ("app-backend" if case == "service token" else COACH)
    before = world.last_id()
    response = send(world, route, world.credentials[case], named)
    check(world, route, response, expected, actor, named)
    access = world.access_after(before)
    if expected != ALLOW:
        assert access == [], "a refused (or self-served) call must not be recorded as access"
        return
    # Exactly one audit row, written before the data was touched, naming who acted for whom and how.
    (event,) = access
    assert (event.actor, event.target, event.action) == (actor, named, route.action)
    assert event.details["route"].split(" ")[0] == route.method
    via = "jwt" if "token" in case else "api_key"
    assert event.details["via"] == via and (event.details.get("key_id") is not None) == (via == "api_key")


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_dev_mode_may_act_for_anyone_and_is_recorded(dev_world: World, route: Route) -> None:
    before = dev_world.last_id()
    response = send(dev_world, route, None, "bob")
    check(dev_world, route, response, ALLOW, "dev", "bob")
    (event,) = dev_world.access_after(before)
    assert (event.actor, event.actor_role, event.target, event.action) == ("dev", "admin", "bob", route.action)
    assert event.details["via"] == "dev"


def test_callers_acting_as_themselves_are_not_recorded_and_openai_user_is_only_a_tag(world: World) -> None:
    """Naming yourself is no access to someone else's data; a user's OpenAI ``user`` tag names nobody."""
    alice = {"Authorization": f"Bearer {world.credentials['user']}"}
    before = world.last_id()
    assert world.client.get("/api/journal/entries", headers={**alice, "X-User-Id": "alice"}).status_code == 200
    tagged = world.client.post("/v1/chat/completions", headers=alice, json={
        "model": "default", "messages": CHAT["messages"], "max_tokens": 8, "user": "bob"})  # fmt: skip
    assert tagged.status_code == 200, tagged.text
    assert world.access_after(before) == []


def test_a_grant_works_until_revoked_and_the_client_sees_who_looked(world: World) -> None:
    def headers(user: str, named: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {world.keys[user]}", **({"X-User-Id": named} if named else {})}

    client = world.client
    for body, param in (({"coachId": COACH, "scopes": ["journal"], "expiresAt": "2020-01-01T00:00:00Z"}, "expiresAt"),
                        ({"coachId": COACH, "scopes": ["diary"]}, "scopes"),
                        ({"coachId": COACH, "scopes": []}, "scopes"),
                        ({"coachId": "frank", "scopes": ["journal"]}, "coachId")):  # fmt: skip
        refused = client.post("/api/privacy/grants", headers=headers("frank"), json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    given = client.post("/api/privacy/grants", headers=headers("frank"),
                        json={"coachId": COACH, "scopes": ["journal"], "expiresAt": later})  # fmt: skip
    assert given.status_code == 201, given.text
    grant = given.json()
    assert grant["active"] and grant["scopes"] == ["journal"] and grant["coachId"] == COACH
    entry = client.post("/api/journal/entries", headers=headers("frank"),
                        json={"transcript": "Ran 5k today.", "recordedAt": "2026-11-21T08:00:00Z"})  # fmt: skip
    assert entry.status_code == 201, entry.text

    seen = client.get("/api/journal/entries", headers=headers(COACH, "frank"))
    assert seen.status_code == 200 and [e["id"] for e in seen.json()["data"]] == [entry.json()["id"]]
    received = client.get("/api/privacy/grants", headers=headers(COACH)).json()["received"]
    assert grant["id"] in {g["id"] for g in received}

    # The client sees the read in their export and on their dashboard.
    exported = client.get("/api/privacy/export", headers=headers("frank")).json()["data"]
    views = [e for e in exported["auditEvents"] if e["action"] == "data.viewed"]
    assert [(e["actor"], e["actor_role"], e["details"]["use"]) for e in views] == [(COACH, "coach", "journal")]
    assert [g["id"] for g in exported["coachGrants"]] == [grant["id"]]
    page = client.get("/dashboard/signin")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = client.post("/dashboard/signin", data={"credential": world.keys["frank"], "csrf_token": token},
                         follow_redirects=False)  # fmt: skip
    assert signed.status_code == 303
    dashboard = client.get("/dashboard").text
    client.cookies.clear()
    access = dashboard.split('id="access-log"', 1)[1].split("</table>", 1)[0]
    assert f'data-actor="{COACH}"' in access and "your journal entries" in access

    # Revoked: the very next request is refused (grants are never cached).
    assert client.delete(f"/api/privacy/grants/{grant['id']}", headers=headers("frank")).status_code == 204
    after = client.get("/api/journal/entries", headers=headers(COACH, "frank"))
    assert after.status_code == 403 and after.json()["error"]["code"] == "grant_required"
    listed = client.get("/api/privacy/grants", headers=headers("frank")).json()["data"]
    assert [(g["id"], g["active"]) for g in listed] == [(grant["id"], False)] and listed[0]["revokedAt"]
    assert client.delete(f"/api/privacy/grants/{grant['id']}", headers=headers("bob")).status_code == 404
