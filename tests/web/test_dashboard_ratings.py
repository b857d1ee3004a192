"""The admin view's answer-quality section, fed by ratings posted through the real API (in process, no model).

Request records are inserted through the repository, so each test knows which answers exist, when they were
given and by which mode and model; the ratings themselves go through ``POST /api/ai/feedback`` as users' keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from upcoach.app import create_app
from upcoach.config import Settings
from upcoach.security.keys import ApiKeys, Role
from upcoach.services import Services
from upcoach.storage.keys import ApiKeyRepository
from upcoach.storage.requests import RequestRecord

NOW = datetime.now(UTC)
CLOUD_MODEL = "cloud:gpt-4o-mini"
SECRET_COMMENT = "my sister Dana keeps calling"


def record(request_id: str, user_id: str, hours_ago: float, mode: str, backend: str) -> RequestRecord:
    return RequestRecord(
        id=request_id, user_id=user_id, created_at=NOW - timedelta(hours=hours_ago), endpoint="hybrid",
        privacy_level="private", decision=mode, processing_mode=mode, backend=backend, outcome="ok",
        latency_ms=100.0, reasons=["test"],
    )  # fmt: skip


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client signed in to the dashboard as an admin, after alice and bob rated their answers via the API."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("dashboard-ratings"), load_model=False, auth="on",
                        redis_url=None)  # fmt: skip
    app = create_app(settings)
    with TestClient(app) as client:
        services: Services = app.state.services
        keys = ApiKeys(ApiKeyRepository(services.db), app.state.audit_log)
        token = {
            user: client.portal.call(keys.create, user, role).token  # type: ignore[union-attr]
            for user, role in (("alice", Role.user), ("bob", Role.user), ("root", Role.admin))
        }
        client.portal.call(  # type: ignore[union-attr]
            services.requests.add_many,
            [
                record("alice-1", "alice", 1, "local", "llamacpp"),
                record("alice-2", "alice", 2, "local", "llamacpp"),
                record("alice-cloud", "alice", 3, "cloud", CLOUD_MODEL),
                record("bob-1", "bob", 4, "local", "llamacpp"),
                record("bob-old", "bob", 72, "local", "llamacpp"),  # outside the last 24 h, inside 7 days
                record("bob-unrated", "bob", 5, "hybrid", CLOUD_MODEL),
            ],
        )

        def rate(user: str, request_id: str, rating: int, **extra: Any) -> int:
            response = client.post("/api/ai/feedback", headers={"Authorization": f"Bearer {token[user]}"},
                                   json={"requestId": request_id, "rating": rating, **extra})  # fmt: skip
            assert response.status_code in (200, 201), response.text
            return response.status_code

        assert rate("alice", "alice-1", 5, comment=SECRET_COMMENT) == 201
        assert rate("alice", "alice-2", 4) == 201
        assert rate("alice", "alice-cloud", 1) == 201
        assert rate("alice", "alice-cloud", 2) == 200  # a second rating replaces the first
        assert rate("bob", "bob-1", 3) == 201
        assert rate("bob", "bob-old", 1) == 201
        # Nobody rates someone else's answer: it does not reach the figures.
        refused = client.post("/api/ai/feedback", headers={"Authorization": f"Bearer {token['bob']}"},
                              json={"requestId": "alice-2", "rating": 1})  # fmt: skip
        assert refused.status_code == 404

        page = client.get("/dashboard/signin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf
        signed = client.post("/dashboard/signin", data={"credential": token["root"], "csrf_token": csrf.group(1)},
                             follow_redirects=False)  # fmt: skip
        assert signed.status_code == 303
        yield client


def quality_rows(html: str) -> list[list[str]]:
    table = html[html.index('<table id="quality-table">') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def chart_of(html: str) -> str:
    start = html.index('<figure class="chart card" id="chart-quality">')
    return html[start : html.index("</figure>", start)]


def test_admin_sees_average_and_count_per_mode_and_model(admin: TestClient) -> None:
    page = admin.get("/dashboard/admin")
    assert page.status_code == 200
    html = page.text
    assert '<h2 id="quality-heading">Answer quality</h2>' in html
    # Last 24 h: local (5, 4, 3) and the cloud answer's replaced rating; bob's old rating is out of the period.
    assert quality_rows(html) == [
        ["cloud", CLOUD_MODEL, "1", "2.00", "below"],
        ["local", "llamacpp", "3", "4.00", "met"],
    ]
    overall = html[html.index('<p id="quality-overall">') :]
    overall = re.sub(r"\s+", " ", overall[: overall.index("</p>")])
    assert "<strong>3.50/5</strong> from 4 ratings" in overall and "target is 4.0/5" in overall
    # Admins see numbers only, never a user's comment.
    assert SECRET_COMMENT not in html


def test_the_quality_chart_is_an_accessible_svg_with_the_target_line(admin: TestClient) -> None:
    html = admin.get("/dashboard/admin").text
    chart = chart_of(html)
    assert 'role="img" aria-labelledby="chart-quality-title chart-quality-desc"' in chart
    assert '<title id="chart-quality-title">Answer quality per mode and model</title>' in chart
    desc = re.search(r'<desc id="chart-quality-desc">([^<]*)</desc>', chart)
    assert desc and "target of 4.0/5" in desc.group(1)
    bars = re.findall(r'<rect class="bar series-rating" x="[^"]+" y="([^"]+)" width="[^"]+" height="([^"]+)"', chart)
    heights = [float(height) for _, height in bars]
    assert len(heights) == 2 and heights[1] == pytest.approx(2 * heights[0])  # 4.0 against 2.0 on a 0-5 axis
    line = re.search(r'<g class="reference" aria-hidden="true">\s*<line [^>]*y1="([^"]+)"', chart)
    assert line, "no target line"
    top_of_local_bar = float(bars[1][0])
    assert float(line.group(1)) == pytest.approx(top_of_local_bar)  # the 4.0 bar reaches exactly the target
    assert ">target 4.0</text>" in chart
    hidden = chart[chart.index('<div class="visually-hidden">') :]
    assert re.findall(r'<th scope="row">([^<]*)</th><td>([^<]*)</td>', hidden) == [
        (f"cloud / {CLOUD_MODEL}", "2.0"),
        ("local / llamacpp", "4.0"),
    ]
    assert html.count('role="img"') == 5


def test_the_period_selects_which_answers_count(admin: TestClient) -> None:
    week = admin.get("/dashboard/admin?range=7d").text
    assert quality_rows(week) == [
        ["cloud", CLOUD_MODEL, "1", "2.00", "below"],
        ["local", "llamacpp", "4", "3.25", "below"],
    ]
    assert "<strong>3.00/5</strong>" in week and "from 5 ratings" in week
