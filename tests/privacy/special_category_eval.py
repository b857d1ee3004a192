"""Scores the special-category detector on its two labelled sets and prints the tables of docs/security.md.

- tests/privacy/data/special_category_eval.txt: one sentence per category and language, idioms and wellness talk
  (every sentence a user message), also scored per language (the language upcoach.language identifies);
- tests/privacy/data/special_category_coaching.txt: coaching sentences in every role and language, labelled by
  whether they are data about a person or a topic, an instruction, a general question.

    .venv/bin/python -m tests.privacy.special_category_eval                 # the detector of this checkout
    .venv/bin/python -m tests.privacy.special_category_eval --detector F.py # any other version of the module
The second form scores an older module file (e.g. ``git show REV:src/upcoach/privacy/special_category.py``) on
the same sets: the "before" figures. A detector without a ``role`` parameter reads every message alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from upcoach.language import LANGUAGES, identify
from upcoach.privacy.special_category import CATEGORIES, detect_special_categories

DATA = Path(__file__).parent / "data"
EVAL_FILE = DATA / "special_category_eval.txt"
COACHING_FILE = DATA / "special_category_coaching.txt"
LABELS = (*CATEGORIES, "self_harm")

Detector = Callable[[str, str], Any]


@dataclass(frozen=True)
class Sample:
    gold: frozenset[str]
    text: str
    role: str = "user"


def _samples(path: Path, split: str, with_role: bool) -> list[Sample]:
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith(f"{split}: "):
            continue
        rest = line.split(": ", 1)[1]
        role = "user"
        if with_role:
            role, rest = rest.split(": ", 1)
        labels, text = rest.split(" | ", 1)
        samples.append(Sample(frozenset() if labels == "-" else frozenset(labels.split(",")), text, role))
    return samples


def load_eval(split: str) -> list[Sample]:
    return _samples(EVAL_FILE, split, with_role=False)


def load_coaching(split: str) -> list[Sample]:
    return _samples(COACHING_FILE, split, with_role=True)


def predict(detector: Detector, sample: Sample) -> frozenset[str]:
    result = detector(sample.text, sample.role)
    return frozenset(result.categories) | ({"self_harm"} if result.self_harm else frozenset())


def per_label(samples: list[Sample], detector: Detector) -> dict[str, tuple[int, int, int]]:
    """Label -> (true positives, false positives, false negatives), per sentence."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for sample in samples:
        predicted = predict(detector, sample)
        for label in sample.gold | predicted:
            stats[label][0 if label in sample.gold and label in predicted else 1 if label in predicted else 2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in stats.items()}


def is_data(samples: list[Sample], detector: Detector) -> tuple[int, int, int]:
    """(tp, fp, fn) of the decision the router acts on: does the sentence hold special-category data at all?"""
    tp = fp = fn = 0
    for sample in samples:
        flagged = bool(predict(detector, sample))
        tp += flagged and bool(sample.gold)
        fp += flagged and not sample.gold
        fn += not flagged and bool(sample.gold)
    return tp, fp, fn


def _ratio(num: int, den: int) -> str:
    return f"{num / den:.2f}" if den else "n/a"


def label_table(samples: list[Sample], detector: Detector) -> list[str]:
    stats = per_label(samples, detector)
    rows = ["| label | labelled | precision | recall |", "| --- | ---: | ---: | ---: |"]
    for label in LABELS:
        tp, fp, fn = stats.get(label, (0, 0, 0))
        if tp + fn or fp:
            rows.append(f"| {label} | {tp + fn} | {_ratio(tp, tp + fp)} | {_ratio(tp, tp + fn)} |")
    tp, fp, fn = (sum(v[i] for v in stats.values()) for i in range(3))
    rows.append(f"| all labels | {tp + fn} | {_ratio(tp, tp + fp)} | {_ratio(tp, tp + fn)} |")
    return rows


def role_table(samples: list[Sample], detector: Detector) -> list[str]:
    """Per role: is-data precision and recall, and how many of its sentences without data were flagged."""
    rows = [
        "| role | sentences | with data | precision | recall | flagged without data |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for role in ("user", "system", "developer", "assistant", "tool", "all"):
        subset = [s for s in samples if role in ("all", s.role)]
        if not subset:
            continue
        tp, fp, fn = is_data(subset, detector)
        negatives = sum(not s.gold for s in subset)
        precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        rows.append(f"| {role} | {len(subset)} | {tp + fn} | {precision} | {recall} | {fp} of {negatives} |")
    return rows


def language_table(samples: list[Sample], detector: Detector) -> list[str]:
    """Per language (upcoach.language's guess for each sentence): label recall and precision, negatives flagged."""
    rows = [
        "| language | sentences | labels | precision | recall | self-harm found | negatives flagged |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_lang: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_lang[identify(sample.text)].append(sample)
    for lang in LANGUAGES:
        subset = by_lang.get(lang, [])
        if not subset:
            continue
        tp = fp = fn = harm = harm_found = 0
        for sample in subset:
            predicted = predict(detector, sample)
            tp += len(sample.gold & predicted)
            fp += len(predicted - sample.gold)
            fn += len(sample.gold - predicted)
            harm += "self_harm" in sample.gold
            harm_found += "self_harm" in sample.gold and "self_harm" in predicted
        negatives = [s for s in subset if not s.gold]
        flagged = sum(bool(predict(detector, s)) for s in negatives)
        rows.append(
            f"| {lang} | {len(subset)} | {tp + fn} | {_ratio(tp, tp + fp)} | {_ratio(tp, tp + fn)} | "
            f"{harm_found} of {harm} | {flagged} of {len(negatives)} |"
        )
    return rows


def errors(samples: list[Sample], detector: Detector) -> list[str]:
    found = []
    for sample in samples:
        predicted = predict(detector, sample)
        if predicted != sample.gold:
            gold = ",".join(sorted(sample.gold)) or "-"
            got = ",".join(sorted(predicted)) or "-"
            found.append(f"  {sample.role}: gold {gold}, got {got} | {sample.text}")
    return found


def latency(detector: Detector) -> str:
    rng = random.Random(7)
    texts = [s.text for split in ("dev", "held") for s in load_eval(split) + load_coaching(split)]
    samples = []
    for _ in range(400):
        message = ""
        while len(message) < 300:
            message += rng.choice(texts) + " "
        start = time.perf_counter()
        detector(message[:300], "user")
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return (
        f"detect_special_categories() on 300 characters: median {statistics.median(samples):.2f} ms, "
        f"P95 {samples[int(0.95 * len(samples)) - 1]:.2f} ms"
    )


def load_detector(path: Path | None) -> Detector:
    function: Callable[..., Any] = detect_special_categories
    if path is not None:
        spec = importlib.util.spec_from_file_location("special_category_under_test", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        function = module.detect_special_categories
    if "role" in inspect.signature(function).parameters:
        return lambda text, role: function(text, role=role)
    return lambda text, role: function(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", type=Path, help="a special_category.py to score instead of this checkout's")
    parser.add_argument("--errors", action="store_true", help="list every sentence scored wrong")
    args = parser.parse_args()
    detector = load_detector(args.detector)
    for split in ("dev", "held"):
        samples = load_eval(split)
        print(f"\n## special_category_eval.txt, {split}: {len(samples)} sentences\n")
        print("\n".join(label_table(samples, detector)))
        negatives = [s for s in samples if not s.gold]
        flagged = sum(bool(predict(detector, s)) for s in negatives)
        print(f"\nnegatives (wellness, idioms): {len(negatives)}, flagged {flagged}\n")
        print("\n".join(language_table(samples, detector)))
        if args.errors:
            print("\n".join(errors(samples, detector)))
    for split in ("dev", "held"):
        samples = load_coaching(split)
        print(f"\n## special_category_coaching.txt, {split}: {len(samples)} sentences\n")
        print("\n".join(role_table(samples, detector)))
        print()
        print("\n".join(label_table(samples, detector)))
        if args.errors:
            print("\n".join(errors(samples, detector)))
    print("\n" + latency(detector))


if __name__ == "__main__":
    main()
