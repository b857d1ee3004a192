"""The alert rules and the compose stack's Prometheus configuration, checked by Debian's promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is missing: apt-get install prometheus (Debian's package)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_alert_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_alert_rules_fire_on_the_plan_thresholds_and_only_then() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts-test.yml")


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    import yaml

    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "alerts-test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert set(alerts) == fired
    guide = (DEPLOY.parent / "docs" / "deploy.md").read_text().lower()
    for rule in alerts.values():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert f"### {anchor.replace('-', ' ')}" in guide, f"docs/deploy.md has no section for {anchor}"


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    # The compose file mounts the rules and the key where the config expects them; here they are copied next to it.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    (tmp_path / "key").write_text("uc_test\n")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    config = config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    config = config.replace("/run/secrets/prometheus_api_key", str(tmp_path / "key"))
    (tmp_path / "prometheus.yml").write_text(config)
    assert "SUCCESS" in promtool("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)
