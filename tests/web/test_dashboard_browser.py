"""The dashboard in a real browser: Debian's chromium driven by Playwright against a live `upcoach serve` with
auth on, the real local model, and a real llama.cpp server standing in for the cloud.

A user makes a request through the API, signs in through the form on a phone-sized screen, finds that request
with its reasons and redaction counts, switches to local-only, and sees their next complex request stay local
for that reason. An admin sees the charts. Screenshots of both views go to docs/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, data_dir_with_model, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]  # fmt: skip
# The screenshots in docs/ are refreshed only on request (UPCOACH_UPDATE_SCREENSHOTS=1), so a test run leaves the
# checkout clean; otherwise they go to a temporary folder, still taken (a page that cannot render fails the test).
DOCS = Path(__file__).resolve().parents[2] / "docs"


def screenshot_path(tmp_path: Path, name: str) -> str:
    folder = DOCS if os.environ.get("UPCOACH_UPDATE_SCREENSHOTS") == "1" else tmp_path
    return str(folder / name)


PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
COMPLEX = (
    "Compare the GROW, OKR and SMART goal frameworks, explain the trade-offs of each, and build me a "
    "12-week plan with weekly milestones to become a better team lead."
)
COMPLEX_WITH_EMAIL = f"My mentor jordan.lee@example.com told me to ask this. {COMPLEX}"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (make browser installs it)"
)


@dataclass
class Scenario:
    server: LiveServer
    keys: dict[str, str]
    first: dict[str, Any]  # the API answer to the user's first request (complex, private, with an email)


def create_key(data_dir: Path, user: str, role: str) -> str:
    env = {**os.environ, "UPCOACH_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "upcoach.cli", "keys", "create", "--user", user, "--role", role],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def process(server: LiveServer, key: str, content: str, privacy: str) -> dict[str, Any]:
    response = httpx.post(server.base_url + "/api/ai/hybrid/process", timeout=180,
        headers={"Authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": content}], "maxTokens": 8, "temperature": 0,
              "routingHints": {"privacyLevel": privacy, "preferLocal": False}},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, model_path: Path, llama_cpp_peer: str) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    data_dir = data_dir_with_model(tmp, model_path)
    keys = {user: create_key(data_dir, user, role) for user, role in (("maya", "user"), ("ops", "admin"))}
    server = start_server(tmp, {
        "UPCOACH_AUTH": "on",
        "UPCOACH_CLOUD_BASE_URL": llama_cpp_peer,
        "UPCOACH_CLOUD_MODEL": "gpt-4o-mini",
        "UPCOACH_RATE_LIMIT_BURST": "200",
        # Two cores shared with the local model: the peer's first answer can be slow, and a fallback is not the
        # subject here.
        "UPCOACH_CLOUD_FIRST_TOKEN_TIMEOUT": "120",
        "UPCOACH_CLOUD_TOTAL_TIMEOUT": "180",
    })  # fmt: skip
    try:
        yield Scenario(server, keys, process(server, keys["maya"], COMPLEX_WITH_EMAIL, "private"))
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(page: Any, base_url: str, key: str) -> None:
    page.goto(base_url + "/dashboard")
    assert page.url.endswith("/dashboard/signin")  # signed out: sent to the form
    page.get_by_label("API key or token").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base_url + "/dashboard")


def request_row(page: Any, base_url: str, request_id: str) -> Any:
    """The table row of one request. Records are written just after the answer, so reload until it is there."""
    row = page.locator(f'tr[data-request-id="{request_id}"]')
    for _ in range(50):
        if row.count():
            return row
        time.sleep(0.2)
        page.goto(base_url + "/dashboard")
    raise AssertionError(f"request {request_id} never appeared on the dashboard")


def assert_fits(page: Any, width: int) -> None:
    """No horizontal scrolling, and every form control has a label."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for control in page.locator("input:not([type=hidden]), select").all():
        assert control.evaluate("element => element.labels.length") > 0, control.evaluate("e => e.outerHTML")


def test_user_sees_their_request_and_sets_local_only(scenario: Scenario, browser: Any, tmp_path: Path) -> None:
    base = scenario.server.base_url
    first = scenario.first
    assert first["routing"]["decision"] == "cloud", first["routing"]
    redactions = first["routing"]["redactions"]
    assert any(kind.lower() == "email" for kind in redactions), redactions

    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    sign_in(page, base, scenario.keys["maya"])
    row = request_row(page, base, first["requestId"])
    assert row.get_attribute("data-mode") == first["processingMode"]
    why = row.locator(".why").inner_text()
    for reason in first["routing"]["reasons"]:
        assert reason in why
    redacted = row.locator(".redacted").inner_text()
    for kind, count in redactions.items():
        assert f"{kind}: {count}" in redacted
    assert "jordan.lee" not in page.content()  # counts only, never the value
    assert_fits(page, PHONE["width"])

    page.get_by_label("Local only: never send my requests to the cloud").check()
    page.get_by_role("button", name="Save settings").click()
    assert page.locator("#settings-saved").inner_text() == "Settings saved."
    assert page.locator("#mode-local_only").is_checked()

    second = process(scenario.server, scenario.keys["maya"], COMPLEX, "public")
    row = request_row(page, base, second["requestId"])
    assert row.get_attribute("data-mode") == "local"
    assert "On our server" in row.locator(".where").inner_text()
    assert "user setting: local_only" in row.locator(".why").inner_text()
    rows = page.locator("tr.request")
    assert rows.first.get_attribute("data-request-id") == second["requestId"]  # newest first
    assert_fits(page, PHONE["width"])
    page.screenshot(path=screenshot_path(tmp_path, "dashboard-user.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    page.goto(base + "/dashboard")
    assert page.url.endswith("/dashboard/signin")
    context.close()


def test_admin_sees_the_service_as_charts(scenario: Scenario, browser: Any, tmp_path: Path) -> None:
    base = scenario.server.base_url
    # Besides the cloud request of the fixture, one that runs locally, so every share chart has both sides.
    local = httpx.post(base + "/api/ai/hybrid/process", timeout=180,
        headers={"Authorization": f"Bearer {scenario.keys['maya']}"},
        json={"messages": [{"role": "user", "content": "How do I drink more water?"}], "maxTokens": 8,
              "routingHints": {"privacyLevel": "private", "preferLocal": True}},
    ).json()  # fmt: skip
    assert local["processingMode"] == "local", local

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    sign_in(page, base, scenario.keys["ops"])
    page.get_by_role("link", name="Service").click()
    page.wait_for_url(base + "/dashboard/admin")
    for _ in range(50):  # records land just after the answers
        if int(page.locator("#total-requests").inner_text()) >= 2:
            break
        time.sleep(0.2)
        page.reload()

    charts = page.locator('svg[role="img"]')
    assert charts.count() == 4
    drawn: dict[str, float] = {}
    for chart in charts.all():
        figure = chart.evaluate("svg => svg.closest('figure').id")
        assert (chart.locator("title").first.text_content() or "").strip()
        heights = chart.locator("rect.bar").evaluate_all("bars => bars.map(bar => Number(bar.getAttribute('height')))")
        assert heights, figure
        drawn[figure] = max(heights)
        # The numbers behind each chart, for screen readers.
        assert page.locator(f"#{figure} table.chart-data tbody tr").count() >= 1
    # A local request, a cloud request with a real price: local share, latency and cost bars have height.
    assert drawn["chart-local-share"] > 0 and drawn["chart-latency"] > 0 and drawn["chart-cost"] > 0, drawn
    assert "chart-events" in drawn
    assert "qwen2.5-0.5b-instruct" in page.locator("#model-id").inner_text()
    assert page.locator("#model-state").inner_text().startswith("ready")
    assert "closed" in page.locator("#breaker-state").inner_text()
    page.screenshot(path=screenshot_path(tmp_path, "dashboard-admin.png"), full_page=True)

    # The same page on a phone: charts scale down, nothing scrolls sideways.
    page.set_viewport_size(PHONE)
    page.reload()
    assert_fits(page, PHONE["width"])
    context.close()
