"""Train, export and evaluate the prompt-injection classifier shipped in ``upcoach/security/data``.

    .venv/bin/python scripts/train_injection.py             # train, write the artifact, print metrics
    .venv/bin/python scripts/train_injection.py --evaluate  # metrics of the shipped artifact on the test split
    .venv/bin/python scripts/train_injection.py --check     # rebuild in memory; exit 1 unless byte-identical

Data: Tensor Trust hijacking + extraction attacks (positives), XSTest prompts (hard negatives: they sound
dangerous but none is an injection), and ``scripts/data/coaching_*.jsonl`` (see generate_coaching_data.py).
Each example has a group (near-duplicates share one); 20 % of groups, chosen by a hash, form the test split,
which is never used for training or tuning. Thresholds are tuned on out-of-fold predictions over the training
split (5 grouped folds), then the model is refitted on the whole training split and exported as plain numbers,
so inference needs numpy only. Everything is deterministic: same inputs, byte-identical artifact.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from upcoach.security.injection import FLAG_THRESHOLD, InjectionDetector  # noqa: E402
from upcoach.security.injection_model import (  # noqa: E402
    CHAR_HEAD,
    CHAR_TAIL,
    FORMAT_VERSION,
    NGRAM_MAX,
    NGRAM_MIN,
    InjectionModel,
    features,
)
from upcoach.security.injection_rules import match_rules  # noqa: E402
from upcoach.security.textnorm import clean, normalize  # noqa: E402

DATA = Path("/work/shared/data")
TENSOR_TRUST = DATA / "tensor-trust"
XSTEST = DATA / "xstest" / "xstest_prompts.csv"
COACHING = ROOT / "scripts" / "data"
ARTIFACT = ROOT / "src" / "upcoach" / "security" / "data" / "injection_model.json"

TEST_PERCENT = 20
FOLDS = 5
C_GRID = (2.0, 8.0, 32.0)
MIN_DF = 2
# Tuned on out-of-fold coaching messages, below the 2 % target so the held-out test has headroom.
FLAG_FPR = 0.01
BLOCK_FPR = 0.002
MIN_BLOCK_MARGIN = 1.0  # logit units between the flag and the block point


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 = injection
    source: str
    group: str
    detail: str = ""

    @property
    def test(self) -> bool:
        digest = hashlib.sha256(f"{self.source}|{self.group}".encode()).hexdigest()
        return int(digest, 16) % 100 < TEST_PERCENT


def load_examples() -> list[Example]:
    examples: list[Example] = []
    seen: set[str] = set()
    for kind in ("hijacking", "extraction"):
        with (TENSOR_TRUST / f"{kind}_robustness_dataset.jsonl").open(encoding="utf-8") as lines:
            for line in lines:
                attack = json.loads(line)["attack"]
                if attack in seen or not attack.strip():
                    continue
                seen.add(attack)
                # Many attacks are one template with a different ending: group them by their opening.
                group = clean(attack)[:40]
                examples.append(Example(attack, 1, f"tensor_trust_{kind}", group))
    with XSTEST.open(encoding="utf-8", newline="") as rows:
        for row in csv.DictReader(rows):
            examples.append(Example(row["prompt"], 0, "xstest", row["id"], detail=row["label"]))
    for name, label, source in (
        ("coaching_benign", 0, "coaching_benign"),
        ("coaching_injections", 1, "coaching_injection"),
    ):
        with (COACHING / f"{name}.jsonl").open(encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                examples.append(Example(record["text"], label, source, record["group"], detail=record["kind"]))
    return examples


def _vectorize(docs: list[list[str]]) -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Documents arrive as precomputed ``features`` lists, so each text is tokenised once, not once per fold.
    vectorizer = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, min_df=MIN_DF, dtype=np.float64)
    return vectorizer, vectorizer.fit_transform(docs)


def _identity(doc: list[str]) -> list[str]:
    return doc


def _classifier(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=0)


def _out_of_fold(docs: list[list[str]], labels: np.ndarray, groups: list[str]) -> dict[float, np.ndarray]:
    """Out-of-fold logits for every C in the grid (grouped folds, so near-duplicates never straddle a fold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    logits = {c: np.zeros(len(docs)) for c in C_GRID}
    for fit_idx, val_idx in StratifiedGroupKFold(n_splits=FOLDS).split(docs, labels, groups):
        vectorizer, matrix = _vectorize([docs[i] for i in fit_idx])
        held_out = vectorizer.transform([docs[i] for i in val_idx])
        for c in C_GRID:
            logits[c][val_idx] = _classifier(c).fit(matrix, labels[fit_idx]).decision_function(held_out)
    return logits


def _threshold_at_fpr(negative_logits: np.ndarray, fpr: float) -> float:
    """The smallest logit threshold that lets at most ``fpr`` of the negatives reach it."""
    ordered = np.sort(negative_logits)[::-1]
    allowed = int(math.floor(fpr * len(ordered)))
    return float(np.nextafter(ordered[allowed], np.inf)) if allowed < len(ordered) else float(ordered[-1])


def _r6(x: float) -> float:
    return float(f"{x:.6g}")


def build(examples: list[Example], verbose: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train on the training split; returns (artifact payload, validation report)."""
    train = [e for e in examples if not e.test]
    texts = [clean(e.text) for e in train]
    docs = [features(t) for t in texts]
    labels = np.array([e.label for e in train])
    groups = [f"{e.source}|{e.group}" for e in train]
    coaching = np.array([e.source == "coaching_benign" for e in train])
    negatives = labels == 0

    best: tuple[float, float, np.ndarray] | None = None
    for c, logits in _out_of_fold(docs, labels, groups).items():
        flag_at = _threshold_at_fpr(logits[coaching], FLAG_FPR)
        recall = float(np.mean(logits[labels == 1] >= flag_at))
        if verbose:
            print(f"  C={c:g}: out-of-fold recall {recall:.4f} at coaching FPR ≤ {FLAG_FPR}")
        if best is None or recall > best[1]:
            best = (c, recall, logits)
    assert best is not None
    c, _, logits = best
    flag_at = _threshold_at_fpr(logits[coaching], FLAG_FPR)
    block_at = max(_threshold_at_fpr(logits[negatives], BLOCK_FPR), flag_at + MIN_BLOCK_MARGIN)

    vectorizer, matrix = _vectorize(docs)
    model = _classifier(c).fit(matrix, labels)
    payload: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "features": {
            "analyzer": "upcoach.security.injection_model.features",
            "ngrams": [NGRAM_MIN, NGRAM_MAX],
            "head_tail_chars": [CHAR_HEAD, CHAR_TAIL],
        },
        "training": {
            "C": c,
            "min_df": MIN_DF,
            "train_examples": len(train),
            "train_sources": dict(sorted(Counter(e.source for e in train).items())),
        },
        "calibration": {"shift": _r6(flag_at), "scale": _r6(math.log(9.0) / (block_at - flag_at))},
        "intercept": _r6(float(model.intercept_[0])),
        "vocabulary": [str(f) for f in vectorizer.get_feature_names_out()],
        "idf": [_r6(float(x)) for x in vectorizer.idf_],
        "coef": [_r6(float(x)) for x in model.coef_[0]],
    }
    # The exported model must reproduce scikit-learn's logits up to the 6-digit rounding.
    exported = InjectionModel(payload)
    sample = texts[:: max(1, len(texts) // 300)]
    reference = model.decision_function(vectorizer.transform([features(t) for t in sample]))
    drift = max(abs(exported.decision(t) - r) for t, r in zip(sample, reference, strict=True))
    if drift > 1e-3:
        raise SystemExit(f"exported model drifts from scikit-learn by {drift:.2e}")

    validation: dict[str, Any] = {"C": c, "flag_logit": flag_at, "block_logit": block_at, "parity_drift": drift}
    # Validation verdicts: out-of-fold classifier scores plus the rule layer (without the decoded-payload pass).
    oof_detected: Counter[str] = Counter()
    for example, logit in zip(train, logits, strict=True):
        rules = match_rules(normalize(example.text))
        clf = exported.calibrate(float(logit))
        miss = 1.0 - clf
        for weight in rules.values():
            miss *= 1.0 - weight
        if 1.0 - miss >= FLAG_THRESHOLD:
            oof_detected[example.source] += 1
    totals = Counter(e.source for e in train)
    validation["detected_rate"] = {s: round(oof_detected[s] / n, 4) for s, n in sorted(totals.items())}
    return payload, validation


def serialize(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def evaluate(examples: list[Example], detector: InjectionDetector) -> dict[str, Any]:
    test = [e for e in examples if e.test]
    verdicts = [detector.scan(e.text).verdict for e in test]
    rows: dict[str, dict[str, Any]] = {}
    for source in sorted({e.source for e in test}):
        picked = [(e, v) for e, v in zip(test, verdicts, strict=True) if e.source == source]
        n = len(picked)
        detected = sum(v != "allow" for _, v in picked)
        blocked = sum(v == "block" for _, v in picked)
        rows[source] = {"label": picked[0][0].label, "n": n, "detected": detected, "blocked": blocked}
    for detail in ("safe", "unsafe"):
        picked = [(e, v) for e, v in zip(test, verdicts, strict=True) if e.source == "xstest" and e.detail == detail]
        rows[f"xstest ({detail})"] = {
            "label": 0,
            "n": len(picked),
            "detected": sum(v != "allow" for _, v in picked),
            "blocked": sum(v == "block" for _, v in picked),
        }

    def overall(sources: set[str]) -> dict[str, float]:
        tp = sum(v != "allow" for e, v in zip(test, verdicts, strict=True) if e.source in sources and e.label == 1)
        fp = sum(v != "allow" for e, v in zip(test, verdicts, strict=True) if e.source in sources and e.label == 0)
        pos = sum(1 for e in test if e.source in sources and e.label == 1)
        neg = sum(1 for e in test if e.source in sources and e.label == 0)
        return {
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / pos if pos else float("nan"),
            "fpr": fp / neg if neg else float("nan"),
        }

    everything = {e.source for e in test}
    coaching_only = {"coaching_benign", "coaching_injection"}

    for e in test:  # warm-up: caches, branch predictors, numpy's first calls
        detector.scan(e.text)
    # Wall time is what a caller waits; CPU time of this thread is the same work without the time the OS gave
    # to other processes, so it stays comparable when the machine is busy.
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(3):
        for e in test:
            start_wall, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            detector.scan(e.text)
            cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
            wall.append((time.perf_counter_ns() - start_wall) / 1e6)
    latency = {"wall": _percentiles(wall), "cpu": _percentiles(cpu), "samples": len(wall)}
    latency["load_average"] = os.getloadavg()[0]
    return {
        "rows": rows,
        "all": overall(everything),
        "coaching": overall(coaching_only),
        "latency": latency,
        "misses": [
            (e.source, e.detail, e.text[:100])
            for e, v in zip(test, verdicts, strict=True)
            if (e.label == 1 and v == "allow") or (e.label == 0 and v != "allow")
        ],
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }


def print_report(report: dict[str, Any]) -> None:
    print("\n| Source | Kind | n | Detected (flag+block) | Rate | Blocked |")
    print("|---|---|---:|---:|---:|---:|")
    for source, row in report["rows"].items():
        kind = "injection → recall" if row["label"] == 1 else "benign → FPR"
        rate = row["detected"] / row["n"] if row["n"] else float("nan")
        print(f"| {source} | {kind} | {row['n']} | {row['detected']} | {rate:.3f} | {row['blocked']} |")
    for name in ("all", "coaching"):
        m = report[name]
        label = "all test sources" if name == "all" else "coaching only (benign + injections)"
        print(f"\n{label}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, FPR {m['fpr']:.3f}")
    lat = report["latency"]
    print(f"\nscan latency, {lat['samples']} scans of the test split (load average {lat['load_average']:.2f}):")
    for kind in ("wall", "cpu"):
        p = lat[kind]
        print(
            f"  {kind:4} p50 {p['p50_ms']:.3f} ms, p95 {p['p95_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms, "
            f"max {p['max_ms']:.3f} ms"
        )
    if report["misses"]:
        print("\nerrors on the test split (source, detail, text):")
        for source, detail, text in report["misses"]:
            print(f"  {source} {detail} {text!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--evaluate", action="store_true", help="evaluate the shipped artifact on the test split")
    mode.add_argument("--check", action="store_true", help="rebuild and compare sha256 with the shipped artifact")
    args = parser.parse_args()

    examples = load_examples()
    counts = Counter((e.source, "test" if e.test else "train") for e in examples)
    if not args.check:
        print("examples:", ", ".join(f"{s}/{split}={n}" for (s, split), n in sorted(counts.items())))
    if args.evaluate:
        print_report(evaluate(examples, InjectionDetector(model=InjectionModel.load(ARTIFACT))))
        return 0
    payload, validation = build(examples, verbose=not args.check)
    blob = serialize(payload)
    fresh = hashlib.sha256(blob).hexdigest()
    if args.check:
        shipped = hashlib.sha256(ARTIFACT.read_bytes()).hexdigest() if ARTIFACT.exists() else "missing"
        print(f"fresh {fresh}\nshipped {shipped}")
        return 0 if fresh == shipped else 1
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(blob)
    print(f"\nvalidation (out-of-fold, training split): {json.dumps(validation, default=float)}")
    print(f"wrote {ARTIFACT.relative_to(ROOT)}: {len(blob) / 1e6:.2f} MB, sha256 {fresh}")
    print_report(evaluate(examples, InjectionDetector(model=InjectionModel(payload))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
