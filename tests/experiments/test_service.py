"""Experiments over the real database (SQLite and PostgreSQL): opt-in gating, results against scipy on the raw
data, the sample-ratio check, and the differentially private export with small groups withheld."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import func, select

from upcoach.errors import ExperimentExists, ExperimentStopped, InvalidRequest
from upcoach.experiments.assignment import Variant, assign
from upcoach.experiments.service import Experiments, Metric
from upcoach.storage.database import Database
from upcoach.storage.experiments import ExperimentRepository
from upcoach.storage.tables import ExperimentEventRow, ExperimentExposureRow, utc_now

on_session_loop = pytest.mark.asyncio(loop_scope="session")

VARIANTS = [Variant("plain", 1, {"chipStyle": "plain"}), Variant("emoji", 1, {"chipStyle": "emoji"})]
METRICS = [Metric("chip_clicked"), Metric("session_minutes", "mean", 0, 60)]


def service(db: Database, opted_in: set[str] | None = None, **kwargs: object) -> Experiments:
    async def opt_in(user_id: str) -> bool:
        return opted_in is None or user_id in opted_in

    return Experiments(ExperimentRepository(db), opt_in, **kwargs)  # type: ignore[arg-type]


async def seed(
    db: Database, key: str, exposures: list[tuple[str, str]], events: Sequence[tuple[str, str, str, float]] = ()
) -> None:
    """Rows written in one transaction: what thousands of app calls would leave behind, without the wait."""
    now = utc_now()
    async with db.sessions.begin() as session:
        session.add_all(
            [ExperimentExposureRow(experiment_key=key, user_id=u, variant=v, exposed_at=now) for u, v in exposures]
        )
        session.add_all(
            [ExperimentEventRow(id=uuid.uuid4().hex, experiment_key=key, user_id=u, variant=v, metric=m, value=x,
                                created_at=now) for u, v, m, x in events]
        )  # fmt: skip


async def count(db: Database, table: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


@on_session_loop
async def test_users_who_did_not_opt_in_get_a_variant_but_nothing_is_stored(migrated_db: Database) -> None:
    experiments = service(migrated_db, opted_in={"in-1", "in-2"})
    await experiments.create("chips", "", VARIANTS, METRICS, "admin")
    outsider = await experiments.assignment("chips", "out-1")
    assert outsider.variant.name in {"plain", "emoji"} and not outsider.stored
    assert await experiments.record_event("chips", "out-1", "chip_clicked", 1) is False
    assert await count(migrated_db, ExperimentExposureRow) == 0
    assert await count(migrated_db, ExperimentEventRow) == 0

    assert (await experiments.assignment("chips", "in-1")).stored
    assert await experiments.record_event("chips", "in-1", "chip_clicked", 1) is True
    # An event implies the exposure, even without an assignment call while opted in.
    assert await experiments.record_event("chips", "in-2", "session_minutes", 12.5) is True
    assert await count(migrated_db, ExperimentExposureRow) == 2
    assert await count(migrated_db, ExperimentEventRow) == 2
    results = await experiments.results("chips")
    assert sum(results["exposures"].values()) == 2  # type: ignore[attr-defined]


@on_session_loop
async def test_validation_duplicates_and_stopping(migrated_db: Database) -> None:
    experiments = service(migrated_db)
    with pytest.raises(InvalidRequest):
        await experiments.create("Bad Key", "", VARIANTS, METRICS, "admin")
    with pytest.raises(InvalidRequest):
        await experiments.create("one", "", VARIANTS[:1], METRICS, "admin")
    await experiments.create("chips", "", VARIANTS, METRICS, "admin")
    with pytest.raises(ExperimentExists):
        await experiments.create("chips", "", VARIANTS, METRICS, "admin")
    with pytest.raises(InvalidRequest):
        await experiments.record_event("chips", "u1", "not_a_metric", 1)
    stopped = await experiments.stop("chips")
    assert stopped.status == "stopped" and stopped.stopped_at is not None
    after = await experiments.assignment("chips", "u1")
    assert after.variant.name == "plain" and not after.stored  # the control, nothing recorded
    with pytest.raises(ExperimentStopped):
        await experiments.record_event("chips", "u1", "chip_clicked", 1)


@on_session_loop
async def test_results_match_scipy_on_the_raw_data(migrated_db: Database) -> None:
    experiments = service(migrated_db)
    await experiments.create("chips", "", VARIANTS, METRICS, "admin")
    rng = np.random.default_rng(11)
    clicked: dict[str, list[int]] = {"plain": [], "emoji": []}
    minutes: dict[str, list[float]] = {"plain": [], "emoji": []}
    exposures_rows, events = [], []
    for i in range(600):
        user = f"user-{i}"
        variant = assign("chips", user, VARIANTS).name
        exposures_rows.append((user, variant))
        did_click = int(rng.random() < (0.2 if variant == "plain" else 0.3))
        clicked[variant].append(did_click)
        events += [(user, variant, "chip_clicked", 1.0)] * (2 * did_click)  # two clicks count once: per user
        if i % 2 == 0:
            sessions = rng.normal(10 if variant == "plain" else 12, 3, 2)
            events += [(user, variant, "session_minutes", float(value)) for value in sessions]
            minutes[variant].append(float(np.mean(sessions)))
    await seed(migrated_db, "chips", exposures_rows, events)
    # An event of a user never exposed (not in the analysed population) must not count.
    await seed(migrated_db, "chips", [], [("ghost", "emoji", "chip_clicked", 1.0)])

    results = await experiments.results("chips")
    exposures = results["exposures"]
    assert exposures == {"plain": len(clicked["plain"]), "emoji": len(clicked["emoji"])}
    rate, mean = results["metrics"]  # type: ignore[misc]
    plain, emoji = rate["variants"]
    assert plain["conversions"] == sum(clicked["plain"]) and emoji["conversions"] == sum(clicked["emoji"])
    expected_ci = stats.binomtest(sum(clicked["emoji"]), len(clicked["emoji"])).proportion_ci(method="wilson")
    assert emoji["ci95"] == pytest.approx([expected_ci.low, expected_ci.high])
    table = [[sum(clicked[v]), len(clicked[v]) - sum(clicked[v])] for v in ("plain", "emoji")]
    assert rate["comparisons"][0]["pValue"] == pytest.approx(stats.chi2_contingency(table, correction=False)[1])

    welch = stats.ttest_ind(minutes["emoji"], minutes["plain"], equal_var=False)
    comparison = mean["comparisons"][0]
    assert comparison["test"] == "Welch t-test" and comparison["pValue"] == pytest.approx(welch.pvalue, rel=1e-6)
    assert mean["variants"][0]["mean"] == pytest.approx(np.mean(minutes["plain"]))
    assert results["sampleRatio"]["pValue"] == pytest.approx(stats.chisquare(list(exposures.values())).pvalue)


@on_session_loop
async def test_sample_ratio_mismatch_is_reported(migrated_db: Database) -> None:
    experiments = service(migrated_db)
    await experiments.create("skewed", "", VARIANTS, METRICS, "admin")
    # Broken logging: exposures of one variant were dropped, so the split no longer follows the 1:1 weights.
    await seed(
        migrated_db, "skewed", [(f"a-{i}", "plain") for i in range(300)] + [(f"b-{i}", "emoji") for i in range(200)]
    )
    srm = (await experiments.results("skewed"))["sampleRatio"]
    assert srm["mismatch"] is True and srm["pValue"] < 0.001  # type: ignore[index]


@on_session_loop
async def test_private_export_is_noisy_states_its_sensitivity_and_withholds_small_groups(
    migrated_db: Database,
) -> None:
    experiments = service(migrated_db, epsilon=1.0, min_group_size=50)
    await experiments.create("dp", "", [Variant("big", 9), Variant("small", 1)], METRICS, "admin")
    await seed(
        migrated_db, "dp",
        [(f"big-{i}", "big") for i in range(400)] + [(f"small-{i}", "small") for i in range(5)],
        [(f"big-{i}", "big", "chip_clicked", 1.0) for i in range(0, 400, 4)],
    )  # fmt: skip
    exports = [await experiments.results("dp", dp=True) for _ in range(30)]
    privacy = exports[0]["privacy"]
    # 1 exposure count + 1 rate metric + (count, sum) of the mean metric = 4 queries at epsilon/4 each.
    assert privacy["queriesPerUser"] == 4 and privacy["epsilonPerQuery"] == 0.25  # type: ignore[index]
    assert privacy["sensitivity"]["session_minutes.sum"] == 60  # type: ignore[index]
    assert privacy["scale"]["exposures"] == 4.0  # type: ignore[index]
    big = [export["variants"][0] for export in exports]  # type: ignore[index]
    small = [export["variants"][1] for export in exports]  # type: ignore[index]
    assert all(entry == {"variant": "small", "suppressed": True} for entry in small)
    exposed = [entry["exposed"] for entry in big]
    assert len(set(exposed)) > 1  # noisy: not the same figure every time
    assert abs(np.mean(exposed) - 400) < 10  # unbiased around the true count (scale 4, 30 draws)
    rates = [entry["metrics"]["chip_clicked"]["rate"] for entry in big]
    assert abs(np.mean(rates) - 0.25) < 0.03
