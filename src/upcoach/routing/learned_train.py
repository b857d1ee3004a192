"""Fitting router versions with scikit-learn (training only: serving is numpy, routing/learned.py).

Two sources, one model (a logistic regression of "the local answer is good enough"):

- rows with text (the labelled set of benchmarks/data, the simulator): dense vector + hashed word 1-2-grams;
- logged rows (request records: vector and text logit, no text): the dense vector plus the logged text logit, on
  top of the base version's text block (its n-gram weights are kept, their scale is refitted).

Local-side rows are weighted by 1 / propensity so the fit estimates the whole population, not just what the
logging policy chose to keep local. The threshold is the knob: ``target_local`` (a share of requests kept local)
or ``quality_floor`` (keep local only when p_local reaches it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from upcoach.routing.learned import FORMAT, LearnedRouter, dense_names, hashed
from upcoach.routing.learned_eval import Logged
from upcoach.routing.learned_eval import p_local as score

BUCKETS = 4096
C = 8.0  # 5-fold CV on the labelled dev split: 2 loses hard requests at low thresholds, 8 and 32 tie
DEFAULT_FLOOR = 0.5
# Dense entries left out of the fit by default: the rules' own outputs. Their phrase tables were tuned on the
# labelled dev split until they scored 1.00 there, so a model given them copies the rules (held-out hard->cloud
# 0.87, like the rules' 0.85); without them it learns from the words and lengths (0.95, simple local 0.90).
EXCLUDE = ("complexity", "signal:")


def _sparse(texts: Sequence[str], buckets: int) -> Any:
    from scipy.sparse import csr_matrix

    indptr, indices, data = [0], [], []
    for text in texts:
        slots, weight = hashed(text, buckets)
        indices.extend(int(s) for s in slots)
        data.extend([weight] * len(slots))
        indptr.append(len(indices))
    return csr_matrix((data, indices, indptr), shape=(len(texts), buckets))


def _fit(x: Any, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        raise ValueError("training rows hold only one outcome: log more (or explore) before training")
    model = LogisticRegression(C=C, max_iter=2000, fit_intercept=False)
    model.fit(x, y, sample_weight=weights)
    return model.coef_[0], 0.0  # the dense vector's "bias" entry is the intercept


def threshold_for(p_local: np.ndarray, target_local: float | None, quality_floor: float | None) -> float:
    if target_local is not None:
        if not 0.0 <= target_local <= 1.0:
            raise ValueError("target local share must be in [0, 1]")
        return float(np.quantile(p_local, 1.0 - target_local)) if len(p_local) else DEFAULT_FLOOR
    return DEFAULT_FLOOR if quality_floor is None else quality_floor


def train(
    rows: Sequence[Logged],
    *,
    exclude: tuple[str, ...] = EXCLUDE,
    base: LearnedRouter | None = None,
    target_local: float | None = None,
    quality_floor: float | None = None,
    source: str = "logged",
    version: str | None = None,
) -> dict[str, Any]:
    """A router artifact fitted on the local-side rows of ``rows`` (see the module text for the two sources)."""
    from scipy.sparse import hstack

    local = [r for r in rows if r.side == "local"]
    if not local:
        raise ValueError("no local-side rows to learn from")
    y = np.array([1 if r.reward >= 0.5 else 0 for r in local])
    weights = np.array([1.0 / max(r.propensity, 1e-3) for r in local])
    dense = np.stack([r.vector for r in local])
    n_dense = dense.shape[1]
    if len(dense_names()) != n_dense:
        raise ValueError("logged vectors were computed with other features than this code's")
    keep = np.array([0.0 if name.startswith(exclude) else 1.0 for name in dense_names()])
    dense = dense * keep
    with_text = all(r.text is not None for r in local)
    if with_text:
        x = hstack([dense, _sparse([r.text or "" for r in local], BUCKETS)]).tocsr()
        coef, _ = _fit(x, y, weights)
        dense_coef, text_coef, text_scale, logged_scale = coef[:n_dense], coef[n_dense:], 1.0, 1.0
    else:
        x = np.column_stack([dense, [r.text_logit for r in local]])
        coef, _ = _fit(x, y, weights)
        dense_coef = coef[:n_dense]
        text_coef = base.text_coef if base is not None else np.zeros(0)
        logged_scale = float(coef[n_dense])
        text_scale = logged_scale * (base.text_scale if base is not None else 1.0)
    created = dt.datetime.now(dt.UTC)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": "",
        "dense_names": list(dense_names()),
        "buckets": BUCKETS,
        "dense_coef": [round(float(v), 6) for v in dense_coef],
        "text_coef": [round(float(v), 6) for v in text_coef],
        "text_scale": text_scale,
        "logged_text_scale": logged_scale,
        "intercept": 0.0,
        "threshold": DEFAULT_FLOOR,
        "meta": {
            "created_at": created.isoformat(timespec="seconds"),
            "source": source,
            "rows": len(rows),
            "local_rows": len(local),
            "base": base.version if base is not None else None,
            "with_text": with_text,
            "excluded": list(exclude),
        },
    }
    payload["version"] = "tmp"
    router = LearnedRouter(payload)
    p_local = np.array([score(router, r) for r in rows])
    payload["threshold"] = round(threshold_for(p_local, target_local, quality_floor), 6)
    payload["meta"]["target_local"] = target_local
    payload["meta"]["quality_floor"] = quality_floor
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    payload["version"] = version or f"r{created:%Y%m%d-%H%M%S}-{digest}"
    return payload
