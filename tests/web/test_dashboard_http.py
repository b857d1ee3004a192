"""The dashboard over HTTP, in process (no model: these tests are about sign-in, sessions and who sees what).

A real app with auth on, real SQLite, real API keys; request records are inserted through the repository so
that each test knows exactly which rows exist and whose they are.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.security.throttle import FailureThrottle
from upcoach.services import Services
from upcoach.storage.audit import AuditFilter, AuditRepository
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRecord
from upcoach.web.routes import SESSION_COOKIE, SIGNIN_COOKIE, Dashboard

ATTEMPTS = 3
JWT_SECRET = "dashboard-http-test-secret-of-32+-bytes"
NOW = datetime.now(UTC)


@dataclass
class Site:
    app: FastAPI
    client: TestClient
    keys: dict[str, str]

    @property
    def services(self) -> Services:
        return self.app.state.services  # type: ignore[no-any-return]

    @property
    def dashboard(self) -> Dashboard:
        return self.app.state.dashboard  # type: ignore[no-any-return]

    def call(self, fn: Any, *args: Any) -> Any:
        return self.client.portal.call(fn, *args)  # type: ignore[union-attr]


def record(request_id: str, user_id: str, minutes_ago: int, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "endpoint": "hybrid",
        "privacy_level": "private",
        "decision": "local",
        "processing_mode": "local",
        "backend": "llamacpp",
        "outcome": "ok",
        "latency_ms": 120.0,
        "reasons": ["simple request: local"],
        **fields,
    }
    return RequestRecord(id=request_id, user_id=user_id, created_at=NOW - timedelta(minutes=minutes_ago), **values)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp: Path = tmp_path_factory.mktemp("dashboard-http")
    settings = Settings(data_dir=tmp, load_model=False, auth="on", redis_url=None, dashboard_signin_attempts=ATTEMPTS,
                        jwt_secret=JWT_SECRET)  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        services: Services = app.state.services
        keys = ApiKeys(ApiKeyRepository(services.db), app.state.audit_log)
        issued = {
            user: client.portal.call(keys.create, user, role).token  # type: ignore[union-attr]
            for user, role in (("alice", Role.user), ("bob", Role.user), ("root", Role.admin), ("eve", Role.auditor))
        }
        client.portal.call(  # type: ignore[union-attr]
            services.requests.add_many,
            [
                record(
                    "alice-cloud", "alice", 5, decision="cloud", processing_mode="cloud", backend="cloud",
                    region="eu", reasons=["complex request (0.71 >= 0.50): cloud with personal data redacted"],
                    redactions={"email": 2, "phone": 1}, prompt_tokens=40, completion_tokens=12,
                    cost_usd=0.000013, cloud_cost_equivalent_usd=0.000013,
                ),
                record("alice-local", "alice", 3, reasons=["user setting: local_only"], prompt_tokens=30),
                record("bob-secret", "bob", 4, reasons=["bob-only reason"], redactions={"person": 3}),
                *(record(f"carol-{i:02d}", "carol", 100 + i) for i in range(25)),
            ],
        )  # fmt: skip
        yield Site(app, client, issued)


@pytest.fixture(autouse=True)
def fresh_client(site: Site) -> Iterator[None]:
    """Each test starts signed out, with an unthrottled address and the real clock."""
    site.client.cookies.clear()
    site.dashboard.throttle = FailureThrottle(attempts=ATTEMPTS, window_seconds=300)
    authenticator = site.app.state.authenticator
    authenticator.throttle = FailureThrottle(attempts=authenticator.throttle.attempts, window_seconds=60)
    clock, auth_clock = site.dashboard.sessions.clock, site.app.state.authenticator.clock
    yield
    site.dashboard.sessions.clock = clock
    site.app.state.authenticator.clock = auth_clock


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name (raw header, to check its attributes)."""
    return {SimpleCookie(header).popitem()[0]: header for header in response.headers.get_list("set-cookie")}


def hidden_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "form has no CSRF token"
    return match.group(1)


def signin(site: Site, key: str, base: str = "") -> httpx.Response:
    """Sign in from a fresh browser (no cookies): fetch the form, post it with its CSRF token."""
    site.client.cookies.clear()
    page = site.client.get(base + "/dashboard/signin")
    assert page.status_code == 200
    return site.client.post(
        base + "/dashboard/signin",
        data={"credential": key, "csrf_token": hidden_token(page.text)},
        follow_redirects=False,
    )


def signed_in(site: Site, user: str) -> str:
    """Sign ``user`` in and return the CSRF token of their session."""
    assert signin(site, site.keys[user]).status_code == 303
    page = site.client.get("/dashboard")
    assert page.status_code == 200
    return hidden_token(page.text)


def audit_events(site: Site, action: str) -> list[Any]:
    if action == "auth.refused":  # counted in memory, written per client address and minute
        site.call(partial(site.app.state.refusals.flush, everything=True))
    return site.call(AuditRepository(site.services.db).query, AuditFilter(action=action), 1000)  # type: ignore[no-any-return]


def test_signed_out_visitors_go_to_the_signin_page(site: Site) -> None:
    for path in ("/dashboard", "/dashboard/admin", "/dashboard?page=2"):
        response = site.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/signin"


def test_pages_carry_security_headers_and_no_script(site: Site) -> None:
    page = site.client.get("/dashboard/signin")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src" not in csp  # nothing may run: default-src 'none' covers scripts
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text.lower() and "style=" not in page.text
    assert '<label for="credential">' in page.text
    css = site.client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["x-frame-options"] == "DENY"
    # The API keeps its own answers: no dashboard headers leak onto it.
    assert "content-security-policy" not in site.client.get("/healthz").headers


def test_signin_sets_a_strict_httponly_session_cookie(site: Site) -> None:
    response = signin(site, site.keys["alice"])
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = set_cookies(response)[SESSION_COOKIE].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    assert "max-age=" in cookie and "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    session_id = SimpleCookie(set_cookies(response)[SESSION_COOKIE]).popitem()[1].value
    assert site.keys["alice"] not in session_id and len(session_id) >= 40
    page = site.client.get("/dashboard")
    assert page.status_code == 200 and '<strong class="user-id">alice</strong>' in page.text
    assert audit_events(site, "dashboard.signed_in")[-1].actor == "alice"


def test_cookies_are_secure_over_tls(site: Site) -> None:
    assert "secure" in set_cookies(site.client.get("https://testserver/dashboard/signin"))[SIGNIN_COOKIE].lower()
    response = signin(site, site.keys["alice"], base="https://testserver")
    assert response.status_code == 303
    assert "secure" in set_cookies(response)[SESSION_COOKIE].lower()


def test_signin_without_or_with_a_wrong_csrf_token_is_refused(site: Site) -> None:
    site.client.get("/dashboard/signin")
    for data in ({"credential": site.keys["alice"]}, {"credential": site.keys["alice"], "csrf_token": "forged"}):
        response = site.client.post("/dashboard/signin", data=data, follow_redirects=False)
        assert response.status_code == 403 and "Form expired" in response.text
        assert SESSION_COOKIE not in set_cookies(response)


def test_failed_signins_are_audited_and_rate_limited(site: Site) -> None:
    before = len(audit_events(site, "auth.refused"))
    for attempt in range(ATTEMPTS):
        response = signin(site, f"uc_0123456789abcdef_{'x' * 43}{attempt}")
        assert response.status_code == 401 and "was not accepted" in response.text
    refused = audit_events(site, "auth.refused")[before:]
    assert sum(event.details["count"] for event in refused) == ATTEMPTS
    assert {path for event in refused for path in event.details["paths"]} == {"/dashboard/signin"}
    assert {reason for event in refused for reason in event.details["reasons"]} == {"unknown_key"}
    # Throttled now, even with a good key: guessing must not continue from this address.
    blocked = signin(site, site.keys["alice"])
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert SESSION_COOKIE not in set_cookies(blocked)


def test_an_empty_credential_is_a_form_error_not_an_attempt(site: Site) -> None:
    response = signin(site, "   ")
    assert response.status_code == 400 and "Paste an API key" in response.text


def test_posts_without_the_session_csrf_token_are_refused(site: Site) -> None:
    token = signed_in(site, "alice")
    form = {"processing_mode": "local_only", "retention_days": "30", "version": "0"}
    for extra in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-1]}):
        response = site.client.post("/dashboard/settings", data={**form, **extra}, follow_redirects=False)
        assert response.status_code == 403, extra
    assert site.call(site.services.privacy.get, "alice").processing_mode == "hybrid"  # type: ignore[union-attr]
    assert site.client.post("/dashboard/signout", data={}, follow_redirects=False).status_code == 403
    assert site.client.get("/dashboard").status_code == 200  # still signed in


def test_sessions_expire_when_idle_and_after_their_lifetime(site: Site) -> None:
    store = site.dashboard.sessions
    signed_in(site, "alice")
    start = store.clock()
    store.clock = lambda: start + store.idle_seconds + 1
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 303

    signed_in(site, "alice")
    start = store.clock()
    # Active every idle/2 seconds, yet the absolute lifetime still ends the session.
    t = start
    while t - start < store.ttl_seconds - store.idle_seconds / 2:
        t += store.idle_seconds / 2
        store.clock = lambda t=t: t  # type: ignore[misc]
        assert site.client.get("/dashboard", follow_redirects=False).status_code == 200
    store.clock = lambda: start + store.ttl_seconds
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 303


def test_signout_revokes_the_session(site: Site) -> None:
    token = signed_in(site, "alice")
    session_id = site.client.cookies.get(SESSION_COOKIE)
    response = site.client.post("/dashboard/signout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/signin"
    assert "max-age=0" in set_cookies(response)[SESSION_COOKIE].lower()
    assert session_id
    # The old cookie, replayed, is dead.
    site.client.cookies.clear()
    replay = site.client.get("/dashboard", headers={"Cookie": f"{SESSION_COOKIE}={session_id}"}, follow_redirects=False)
    assert replay.status_code == 303


def test_a_revoked_key_ends_its_open_sessions_on_the_next_request(site: Site) -> None:
    keys = ApiKeys(ApiKeyRepository(site.services.db), site.app.state.audit_log)
    issued = site.call(keys.create, "mallory", Role.user)
    assert signin(site, issued.token).status_code == 303
    session_id = site.client.cookies.get(SESSION_COOKIE)
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 200
    site.call(keys.revoke, issued.key.id)
    ended = site.client.get("/dashboard", follow_redirects=False)
    assert ended.status_code == 303 and ended.headers["location"] == "/dashboard/signin"
    assert [e.actor for e in audit_events(site, "dashboard.session_ended")][-1:] == ["mallory"]
    # The session is gone from the store, not just refused once.
    assert site.call(site.dashboard.sessions.get, session_id) is None


def test_an_expired_token_ends_its_open_sessions_on_the_next_request(site: Site) -> None:
    now = time.time()
    token = jwt.encode({"sub": "tina", "role": "user", "exp": int(now) + 600}, JWT_SECRET, algorithm="HS256")
    assert signin(site, token).status_code == 303
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 200
    authenticator = site.app.state.authenticator
    authenticator.clock = lambda: now + 600 + 3600  # the token expired an hour ago; the session is younger
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 303
    authenticator.clock = lambda: now  # even back in time: that session has ended
    assert site.client.get("/dashboard", follow_redirects=False).status_code == 303


def test_users_see_their_own_requests_only(site: Site) -> None:
    signed_in(site, "alice")
    page = site.client.get("/dashboard").text
    ids = re.findall(r'data-request-id="([^"]+)"', page)
    assert ids == ["alice-local", "alice-cloud"]  # newest first
    assert "bob-secret" not in page and "bob-only reason" not in page and 'data-kind="person"' not in page
    cloud_row = page[page.index('data-request-id="alice-cloud"') :]
    cloud_row = cloud_row[: cloud_row.index("</tr>")]
    assert "complex request (0.71 &gt;= 0.50): cloud with personal data redacted" in cloud_row
    assert '<li data-kind="email">email: 2</li>' in cloud_row and "phone: 1" in cloud_row
    assert "region eu" in cloud_row and "40 in, 12 out" in cloud_row and "$0.000013" in cloud_row

    signed_in(site, "bob")
    page = site.client.get("/dashboard").text
    assert re.findall(r'data-request-id="([^"]+)"', page) == ["bob-secret"]
    assert "alice" not in page.replace('<strong class="user-id">bob</strong>', "")


def test_requests_are_paginated(site: Site) -> None:
    carol = site.call(ApiKeys(ApiKeyRepository(site.services.db), site.app.state.audit_log).create, "carol", Role.user)
    site.keys["carol"] = carol.token
    signed_in(site, "carol")
    first = re.findall(r'data-request-id="([^"]+)"', site.client.get("/dashboard").text)
    second_page = site.client.get("/dashboard?page=2").text
    second = re.findall(r'data-request-id="([^"]+)"', second_page)
    assert first == [f"carol-{i:02d}" for i in range(20)] and second == [f"carol-{i:02d}" for i in range(20, 25)]
    assert 'rel="prev"' in second_page and 'rel="next"' not in second_page
    for bad in ("0", "-1", "abc", "99999999"):
        assert site.client.get(f"/dashboard?page={bad}").status_code == 400


def test_the_admin_view_is_for_admins_and_auditors(site: Site) -> None:
    before = len(audit_events(site, "auth.refused"))
    signed_in(site, "alice")
    refused = site.client.get("/dashboard/admin")
    assert refused.status_code == 403 and "<svg" not in refused.text
    assert 'href="/dashboard/admin"' not in site.client.get("/dashboard").text
    (event,) = audit_events(site, "auth.refused")[before:]
    details = event.details
    assert (details["user_ids"], details["reasons"], details["paths"]) == (["alice"], {"role": 1}, ["/dashboard/admin"])

    for user in ("root", "eve"):
        signed_in(site, user)
        page = site.client.get("/dashboard/admin")
        assert page.status_code == 200, user
        assert page.text.count('role="img"') == 4  # nothing rated yet: the quality chart draws no SVG
        assert "No rated answers in this period." in page.text and '<table id="quality-table">' in page.text
        assert '<title id="chart-local-share-title">Local share over time</title>' in page.text
        assert '<rect class="bar series-local"' in page.text
        assert '<div class="visually-hidden">\n  <table class="chart-data">' in page.text
        assert '<dd id="total-requests">28</dd>' in page.text
        # 27 of the 28 requests ran locally.
        assert "96% answered locally" in page.text
        assert '<form method="post" action="/dashboard/settings"' not in page.text
    assert site.client.get("/dashboard/admin?range=7d").status_code == 200
    assert site.client.get("/dashboard/admin?range=forever").status_code == 400


def test_settings_form_saves_through_the_privacy_service(site: Site) -> None:
    token = signed_in(site, "bob")
    page = site.client.get("/dashboard").text
    assert 'name="version" value="0"' in page and 'id="mode-hybrid" name="processing_mode" value="hybrid"' in page
    form = {"csrf_token": token, "processing_mode": "local_only", "retention_days": "30", "region": "",
            "do_not_share": "on", "version": "0"}  # fmt: skip
    response = site.client.post("/dashboard/settings", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/dashboard?saved=1")
    saved = site.call(site.services.privacy.get, "bob")  # type: ignore[union-attr]
    assert (saved.processing_mode, saved.retention_days, saved.do_not_share) == ("local_only", 30, True)
    assert saved.version == 1
    assert saved.analytics_opt_in is False  # an unticked box is a "no"
    page = site.client.get("/dashboard?saved=1").text
    assert 'id="settings-saved"' in page and 'name="version" value="1"' in page
    assert re.search(r'id="mode-local_only" name="processing_mode" value="local_only"\s+checked', page)

    # Someone else saved meanwhile: the stale form is refused inline, nothing is overwritten.
    stale = site.client.post("/dashboard/settings", data={**form, "processing_mode": "cloud_allowed"})
    assert stale.status_code == 409 and 'id="settings-error"' in stale.text and "version" in stale.text
    assert site.call(site.services.privacy.get, "bob").processing_mode == "local_only"  # type: ignore[union-attr]

    for field, value in (("retention_days", "0"), ("retention_days", "many"), ("processing_mode", "anywhere"),
                         ("region", "Not A Region!")):  # fmt: skip
        bad = site.client.post("/dashboard/settings", data={**form, "version": "1", field: value})
        assert bad.status_code == 400 and 'id="settings-error"' in bad.text, (field, value)
    assert site.call(site.services.privacy.get, "bob").version == 1  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def dev_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard-dev"), load_model=False, auth="off", redis_url=None)
    with TestClient(create_app(settings)) as client:
        yield client


def test_auth_off_says_so_and_signs_in_as_dev(dev_site: TestClient) -> None:
    page = dev_site.get("/dashboard/signin")
    assert 'id="auth-off"' in page.text and "UPCOACH_AUTH=off" in page.text
    assert 'name="credential"' not in page.text
    response = dev_site.post("/dashboard/signin", data={"csrf_token": hidden_token(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    home = dev_site.get("/dashboard")
    assert '<strong class="user-id">dev</strong> (admin)' in home.text and 'id="auth-off"' in home.text
    assert dev_site.get("/dashboard/admin").status_code == 200
