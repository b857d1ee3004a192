"""Experiments as the API sees them: create and stop (admins), assignment and events (users), results.

Privacy: a user who has not opted in to analytics still gets a variant (the app works the same for everyone), but
nothing about them is stored: no exposure, no events. Results count opted-in users only. The differentially
private export (``results(dp=True)``) is what may leave the admin console; the exact results are for admins.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from upcoach.errors import ExperimentStopped, InvalidRequest, NotFound
from upcoach.experiments.assignment import Variant, assign
from upcoach.experiments.stats import (
    SRM_THRESHOLD,
    Comparison,
    LaplaceMechanism,
    compare_means,
    compare_rates,
    mean_summary,
    rate_summary,
    sample_ratio_check,
)
from upcoach.storage.experiments import ExperimentRepository, UserOutcome
from upcoach.storage.tables import ExperimentRow, utc_now

log = logging.getLogger(__name__)

OptIn = Callable[[str], Awaitable[bool]]
MetricKind = Literal["rate", "mean"]
KEY_FORMAT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Metric:
    """``rate``: share of exposed users with an event value > 0 (chip clicked). ``mean``: the mean over users of
    each user's mean value (rating, session length). ``lower``/``upper`` clip values in the DP export only."""

    name: str
    kind: MetricKind = "rate"
    lower: float = 0.0
    upper: float = 1.0

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "min": self.lower, "max": self.upper}


@dataclass(frozen=True)
class Experiment:
    key: str
    description: str
    variants: list[Variant]
    metrics: list[Metric]
    status: str
    created_by: str
    created_at: object = None
    stopped_at: object = None

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def metric(self, name: str) -> Metric | None:
        return next((metric for metric in self.metrics if metric.name == name), None)

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "description": self.description,
            "variants": [{"name": v.name, "weight": v.weight, "config": v.config} for v in self.variants],
            "metrics": [metric.to_json() for metric in self.metrics],
            "control": self.control.name,
            "status": self.status,
            "createdBy": self.created_by,
            "createdAt": _iso(self.created_at),
            "stoppedAt": _iso(self.stopped_at),
        }


@dataclass(frozen=True)
class Assignment:
    variant: Variant
    stored: bool


def _iso(value: object) -> str | None:
    return value.isoformat() if value is not None else None  # type: ignore[attr-defined]


def _from_row(row: ExperimentRow) -> Experiment:
    return Experiment(
        key=row.key,
        description=row.description,
        variants=[Variant(str(v["name"]), float(v["weight"]), dict(v.get("config") or {})) for v in row.variants],  # type: ignore[call-overload]
        metrics=[
            Metric(str(m["name"]), m["kind"], float(m["min"]), float(m["max"]))  # type: ignore[arg-type]
            for m in row.metrics
        ],
        status=row.status,
        created_by=row.created_by,
        created_at=row.created_at,
        stopped_at=row.stopped_at,
    )


def validate(key: str, variants: Sequence[Variant], metrics: Sequence[Metric]) -> None:
    if not KEY_FORMAT.fullmatch(key):
        raise InvalidRequest("key: 1-64 characters of a-z, 0-9, '_', '.', '-'", param="key")
    if len(variants) < 2:
        raise InvalidRequest("variants: an experiment needs at least two (the first is the control)", param="variants")
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise InvalidRequest("variants: names must be unique", param="variants")
    if not all(math.isfinite(v.weight) and v.weight > 0 for v in variants):
        raise InvalidRequest("variants: every weight must be a positive number", param="variants")
    if not metrics:
        raise InvalidRequest("metrics: name at least one outcome metric", param="metrics")
    metric_names = [metric.name for metric in metrics]
    if len(set(metric_names)) != len(metric_names):
        raise InvalidRequest("metrics: names must be unique", param="metrics")
    for metric in metrics:
        if not metric.lower < metric.upper:
            raise InvalidRequest(f"metrics: {metric.name}: min must be below max", param="metrics")


@dataclass
class Experiments:
    repository: ExperimentRepository
    opted_in: OptIn
    epsilon: float = 1.0
    min_group_size: int = 20
    mechanism_factory: Callable[[float], LaplaceMechanism] = field(default=LaplaceMechanism)

    async def create(
        self, key: str, description: str, variants: Sequence[Variant], metrics: Sequence[Metric], created_by: str
    ) -> Experiment:
        validate(key, variants, metrics)
        row = ExperimentRow(
            key=key,
            description=description,
            variants=[{"name": v.name, "weight": v.weight, "config": v.config} for v in variants],
            metrics=[metric.to_json() for metric in metrics],
            status="running",
            created_by=created_by,
            created_at=utc_now(),
        )
        return _from_row(await self.repository.create(row))

    async def get(self, key: str) -> Experiment:
        row = await self.repository.get(key)
        if row is None:
            raise NotFound(f"experiment {key!r} does not exist", param="key")
        return _from_row(row)

    async def list(self) -> list[Experiment]:
        return [_from_row(row) for row in await self.repository.list()]

    async def stop(self, key: str) -> Experiment:
        await self.get(key)
        await self.repository.stop(key, utc_now())
        return await self.get(key)

    async def assignment(self, key: str, user_id: str) -> Assignment:
        """The user's sticky variant; a stopped experiment serves its control to everyone and records nothing."""
        started_at = utc_now()
        experiment = await self.get(key)
        if experiment.status != "running":
            return Assignment(experiment.control, stored=False)
        variant = assign(experiment.key, user_id, experiment.variants)
        if not await self.opted_in(user_id):
            return Assignment(variant, stored=False)
        # Not stored when the user erased their data while this ran.
        stored = await self.repository.expose(experiment.key, user_id, variant.name, started_at=started_at)
        return Assignment(variant, stored=stored)

    async def record_event(self, key: str, user_id: str, metric: str, value: float) -> bool:
        """Store an outcome; False (and nothing stored) for users who did not opt in to analytics, or who erased
        their data while this ran."""
        started_at = utc_now()
        experiment = await self.get(key)
        if experiment.status != "running":
            raise ExperimentStopped(f"experiment {key!r} is stopped and takes no more events")
        if experiment.metric(metric) is None:
            names = ", ".join(m.name for m in experiment.metrics)
            raise InvalidRequest(f"metric {metric!r} is not one of this experiment's metrics ({names})", param="metric")
        if not math.isfinite(value):
            raise InvalidRequest("value must be a finite number", param="value")
        if not await self.opted_in(user_id):
            return False
        variant = assign(experiment.key, user_id, experiment.variants)
        # An outcome means the user saw their variant, even if the app never asked for the assignment while
        # they were opted in; recording the exposure keeps every event inside the analysed population.
        if not await self.repository.expose(experiment.key, user_id, variant.name, started_at=started_at):
            return False
        return await self.repository.add_event(
            experiment.key, user_id, variant.name, metric, value, started_at=started_at
        )

    async def results(self, key: str, *, dp: bool = False) -> dict[str, object]:
        experiment = await self.get(key)
        exposures = await self.repository.exposures(key)
        outcomes = {metric.name: await self.repository.outcomes(key, metric.name) for metric in experiment.metrics}
        if dp:
            return self._private_results(experiment, exposures, outcomes)
        return _exact_results(experiment, exposures, outcomes)

    def _private_results(
        self, experiment: Experiment, exposures: dict[str, int], outcomes: dict[str, list[UserOutcome]]
    ) -> dict[str, object]:
        """Laplace noise on every released number; variants whose noisy size is below the minimum are withheld.

        A user belongs to one variant, so variants compose in parallel. Within a variant one user changes the
        exposure count by 1, each rate metric's conversion count by 1, and each mean metric's user count by 1
        and its sum by at most max(|min|, |max|) (values are clipped to [min, max] first). With k such queries
        each one gets epsilon / k, so the whole export costs ``epsilon``. Suppression is decided on the noisy
        size, so withholding a group reveals nothing beyond the noise either. Ratios (rate, mean) are computed
        from the noisy figures: post-processing costs no budget.
        """
        rate_metrics = [m for m in experiment.metrics if m.kind == "rate"]
        mean_metrics = [m for m in experiment.metrics if m.kind == "mean"]
        queries = 1 + len(rate_metrics) + 2 * len(mean_metrics)
        mechanism = self.mechanism_factory(self.epsilon / queries)
        sensitivity: dict[str, float] = {"exposures": 1.0}
        for metric in rate_metrics:
            sensitivity[f"{metric.name}.conversions"] = 1.0
        for metric in mean_metrics:
            sensitivity[f"{metric.name}.users"] = 1.0
            sensitivity[f"{metric.name}.sum"] = max(abs(metric.lower), abs(metric.upper))

        variants: list[dict[str, object]] = []
        for variant in experiment.variants:
            noisy_exposed = mechanism.release(exposures.get(variant.name, 0), 1.0)
            if noisy_exposed < self.min_group_size:
                variants.append({"variant": variant.name, "suppressed": True})
                continue
            exposed = max(0.0, noisy_exposed)
            entry: dict[str, object] = {"variant": variant.name, "suppressed": False, "exposed": round(exposed)}
            metrics: dict[str, object] = {}
            for metric in experiment.metrics:
                mine = [o for o in outcomes[metric.name] if o.variant == variant.name]
                if metric.kind == "rate":
                    conversions = max(0.0, mechanism.release(sum(o.maximum > 0 for o in mine), 1.0))
                    metrics[metric.name] = {
                        "conversions": round(conversions),
                        "rate": min(1.0, conversions / exposed) if exposed else None,
                    }
                else:
                    users = max(0.0, mechanism.release(len(mine), 1.0))
                    clipped = float(np.clip([o.mean for o in mine], metric.lower, metric.upper).sum()) if mine else 0.0
                    total = mechanism.release(clipped, sensitivity[f"{metric.name}.sum"])
                    mean = min(metric.upper, max(metric.lower, total / users)) if users >= 1 else None
                    metrics[metric.name] = {"users": round(users), "mean": mean}
            entry["metrics"] = metrics
            variants.append(entry)
        return {
            "experiment": experiment.to_json(),
            "dp": True,
            "privacy": {
                "mechanism": mechanism.name,
                "epsilon": self.epsilon,
                "queriesPerUser": queries,
                "epsilonPerQuery": mechanism.epsilon,
                "sensitivity": sensitivity,
                "scale": {name: mechanism.scale(value) for name, value in sensitivity.items()},
                "minGroupSize": self.min_group_size,
                "note": "counts are noisy and rounded; rates and means are computed from the noisy figures",
            },
            "variants": variants,
        }


def _interval(ci: tuple[float, float] | None) -> list[float] | None:
    return [ci[0], ci[1]] if ci is not None else None


def _comparison(name: str, control: str, comparison: Comparison) -> dict[str, object]:
    return {
        "variant": name,
        "against": control,
        "test": comparison.test,
        "difference": comparison.difference,
        "ci95": _interval(comparison.ci),
        "statistic": comparison.statistic,
        "pValue": comparison.p_value,
        "significant": comparison.significant,
    }


def _exact_results(
    experiment: Experiment, exposures: dict[str, int], outcomes: dict[str, list[UserOutcome]]
) -> dict[str, object]:
    names = [variant.name for variant in experiment.variants]
    observed = [exposures.get(name, 0) for name in names]
    srm = sample_ratio_check(observed, [variant.weight for variant in experiment.variants])
    metrics: list[dict[str, object]] = []
    for metric in experiment.metrics:
        by_variant: list[dict[str, object]] = []
        comparisons: list[dict[str, object]] = []
        if metric.kind == "rate":
            rates = []
            for name, exposed in zip(names, observed, strict=True):
                converted = sum(o.maximum > 0 for o in outcomes[metric.name] if o.variant == name)
                summary = rate_summary(converted, exposed)
                rates.append(summary)
                by_variant.append(
                    {"variant": name, "exposed": exposed, "conversions": converted, "rate": summary.rate,
                     "ci95": _interval(summary.ci)}
                )  # fmt: skip
            comparisons = [
                _comparison(name, names[0], compare_rates(rates[0], rate))
                for name, rate in zip(names[1:], rates[1:], strict=True)
            ]
        else:
            means = []
            for name, exposed in zip(names, observed, strict=True):
                summary = mean_summary([o.mean for o in outcomes[metric.name] if o.variant == name])
                means.append(summary)
                by_variant.append(
                    {"variant": name, "exposed": exposed, "users": summary.n, "mean": summary.mean,
                     "std": summary.std, "ci95": _interval(summary.ci)}
                )  # fmt: skip
            comparisons = [
                _comparison(name, names[0], compare_means(means[0], mean))
                for name, mean in zip(names[1:], means[1:], strict=True)
            ]
        metrics.append({"name": metric.name, "kind": metric.kind, "variants": by_variant, "comparisons": comparisons})
    return {
        "experiment": experiment.to_json(),
        "dp": False,
        "exposures": dict(zip(names, observed, strict=True)),
        "sampleRatio": {
            "test": "chi-square goodness of fit",
            "expected": dict(zip(names, srm.expected, strict=True)),
            "chi2": srm.chi2,
            "pValue": srm.p_value,
            "threshold": SRM_THRESHOLD,
            "mismatch": srm.mismatch,
        },
        "metrics": metrics,
    }
