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


async def test_ab_between_versions_sticks_per_user_and_compares_the_arms(tmp_path: Path) -> None:
    """``router ab start|status|stop``: users split by the experiments framework's assignment, each arm's free
    choices counted from the request records (here written as the engine's record writer would)."""
    import asyncio

    from tests.routing.test_learned import _payload_saying
    from upcoach.routing.learned_store import RouterStore, load_ab
    from upcoach.storage.database import Database
    from upcoach.storage.requests import RequestRecord, RequestRepository

    settings = Settings(data_dir=tmp_path, load_model=False)
    store = RouterStore.from_settings(settings)
    store.save(_payload_saying(0.9, "va"))
    store.save(_payload_saying(0.1, "vb"))
    with pytest.raises(ValueError, match="active router"):
        store.start_ab("vb", 0.5)
    store.use("va")
    store.start_ab("vb", 0.3)
    ab = load_ab(settings)
    assert ab is not None
    picks = [ab.pick(f"user-{i}").version for i in range(2000)]
    assert picks == [ab.pick(f"user-{i}").version for i in range(2000)]  # sticky
    assert 0.25 < picks.count("vb") / len(picks) < 0.35 and ab.pick(None).version == "va"

    db = Database(settings.effective_database_url)
    await db.migrate()
    vector = [0.0] * len(_payload_saying(0.5)["dense_coef"])
    records = [
        RequestRecord(id=f"r{i}", user_id=f"u{i}", endpoint="hybrid", privacy_level="public", decision=side,
                      processing_mode=side, backend=side, outcome=outcome, latency_ms=1.0, fallback_used=False,
                      routing={"side": side, "forced": False, "propensity": 0.95, "router": version, "vector": vector})
        for i, (version, side, outcome) in enumerate(
            [("va", "local", "ok"), ("va", "local", "error"), ("vb", "cloud", "ok"), ("vb", "local", "ok")]
        )
    ]  # fmt: skip
    await RequestRepository(db).add_many(records)
    await db.dispose()

    def status() -> dict:
        result = CliRunner().invoke(app, ["router", "ab", "status", "--json"], env={"UPCOACH_DATA_DIR": str(tmp_path)})
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    report = await asyncio.to_thread(status)
    assert report["good_rate"]["control"]["n"] == 2 and report["good_rate"]["control"]["successes"] == 1
    assert report["good_rate"]["candidate"]["successes"] == 2 and report["local_share"]["candidate"]["successes"] == 1
    assert store.stop_ab() and load_ab(settings) is None
