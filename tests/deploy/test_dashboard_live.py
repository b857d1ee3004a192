"""The Grafana dashboard against a live server: every query's metric names are exported, and a real Prometheus
(Debian's package) scraping the server with an operator key gets data for the dashboard's queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.deploy.conftest import OpsServer

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "dashboards" / "upcoach.json").read_text())
QUERIES = [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"] for target in panel["targets"]]
# Counted only when they happen (a labelled counter has no series before its first event); their names are still
# checked against the exposition's HELP/TYPE lines.
MAY_BE_EMPTY = {"Fallbacks by reason", "Security checks that failed to run", "Request records dropped"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": (), "info": ("_info",), "summary": ("_count", "_sum", "_created")}  # fmt: skip


def exported_names(exposition: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    return set(re.findall(r"\b((?:upcoach|process|python)_[a-zA-Z0-9_]+)\b", without_labels))


@pytest.fixture(scope="module")
def rated(served: OpsServer) -> OpsServer:
    """The answered request rated by its user, so the rating panel has data."""
    with served.user() as user:
        question = {"role": "user", "content": "One tip for sleep?"}
        completion = user.post(
            "/v1/chat/completions", json={"model": "default", "messages": [question], "max_tokens": 16}
        )
        assert completion.status_code == 200, completion.text
        request_id = completion.json()["id"]
        deadline = time.monotonic() + 30
        while True:  # the record is written off the request path: wait until it is there to be rated
            rating = user.post("/api/ai/feedback", json={"requestId": request_id, "rating": 4})
            if rating.status_code != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rating.status_code == 201, rating.text
    return served


def test_every_dashboard_query_uses_exported_metric_names(rated: OpsServer) -> None:
    with rated.admin() as admin:
        exported = exported_names(admin.get("/metrics").text)
    assert len(QUERIES) >= 18
    for title, expr in QUERIES:
        names = metric_names(expr)
        assert names, f"{title}: no metric name found in {expr!r}"
        assert names <= exported, f"{title}: {sorted(names - exported)} not exported"


def test_the_name_check_can_fail() -> None:
    assert metric_names('sum(rate(upcoach_nonexistent_total{mode="x"}[5m]))') == {"upcoach_nonexistent_total"}
    assert "upcoach_nonexistent_total" not in exported_names(
        "# TYPE upcoach_requests counter\nupcoach_requests_total 1\n"
    )


@pytest.fixture(scope="module")
def prometheus(rated: OpsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is missing: apt-get install prometheus (Debian's package)")
    tmp = tmp_path_factory.mktemp("prometheus")
    key_file = tmp / "key"
    key_file.write_text(rated.admin_key)
    target = rated.server.base_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
        "scrape_configs": [{
            "job_name": "upcoach", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}],
            "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
        }],
    }  # fmt: skip
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_scrapes(url, process, tmp / "prometheus.log")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_for_scrapes(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the target is up and at least five scrapes are stored (rate() needs two inside its window)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            result = httpx.get(url + "/api/v1/query", params={"query": 'count_over_time(up{job="upcoach"}[1m])'})
            series = result.json()["data"]["result"] if result.status_code == 200 else []
            if series and float(series[0]["value"][1]) >= 5:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prometheus did not scrape the server:\n{log.read_text()}")


def _query(url: str, expr: str) -> list[dict[str, object]]:
    response = httpx.get(url + "/api/v1/query", params={"query": expr.replace("$__rate_interval", "1m")})
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_the_server_with_a_key(prometheus: str) -> None:
    up = _query(prometheus, 'up{job="upcoach"}')
    assert up and up[0]["value"][1] == "1"  # type: ignore[index]


def test_dashboard_queries_return_data(prometheus: str) -> None:
    empty = [title for title, expr in QUERIES if title not in MAY_BE_EMPTY and not _query(prometheus, expr)]
    assert not empty, f"panels without data: {empty}"


def test_alert_rules_load_and_evaluate(prometheus: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # rules are evaluated every second; wait for the first evaluation of each
        groups = httpx.get(prometheus + "/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rules) == 11
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
