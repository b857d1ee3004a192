"""``upcoach router train|evaluate|use|list`` end to end on the simulator: training, evaluation, promotion and
rollback from the CLI, in a throwaway data folder (the versions are signed with that folder's key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from upcoach.cli import app
from upcoach.config import Settings
from upcoach.routing.learned_store import load_active

LABELLED = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "routing_requests.jsonl"


def test_train_evaluate_promote_and_roll_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPCOACH_DATA_DIR", str(tmp_path))
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["router", *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert "routing by the rules" in run("list")
    # v1 learns from a log of the rules (with exploration), v2 from a log of v1 once v1 is active.
    assert "router v1: trained on" in run("train", "--simulate", "500", "--labelled", str(LABELLED), "--version", "v1")
    run("use", "v1")
    run("train", "--simulate", "500", "--labelled", str(LABELLED), "--version", "v2", "--target-local", "0.6",
        "--seed", "2")  # fmt: skip
    report = json.loads(run("evaluate", "v2", "--simulate", "500", "--labelled", str(LABELLED), "--rounds", "200",
                            "--json"))  # fmt: skip
    assert [r["policy"] for r in report] == ["candidate v2", "active v1", "rules"]
    for r in report:
        assert r["rows"] > 50
        for key in ("ips", "dr", "local_share"):
            assert 0.0 <= r[key]["low"] <= r[key]["value"] <= r[key]["high"] <= 1.5
    assert report[0]["local_share"]["value"] == pytest.approx(0.6, abs=0.15)  # the knob sets the threshold
    settings = Settings()
    run("use", "v2")
    assert "* v2" in run("list")
    assert (router := load_active(settings)) is not None and router.version == "v2"
    run("use", "v1")  # rollback
    assert "* v1" in run("list") and "  v2" in run("list")
    assert (router := load_active(settings)) is not None and router.version == "v1"
    missing = runner.invoke(app, ["router", "use", "v9"])
    assert missing.exit_code == 1 and "no router version v9" in missing.output
