"""PII found per language in tests/security/data/pii_languages.txt (docs/security.md).

    .venv/bin/python -m tests.security.pii_languages_eval            # add --errors to list every miss

Scored like tests/security/test_pii.py: a labelled value is found when a prediction of its type overlaps it; a
prediction is correct when it overlaps a labelled value of its type. Lines without a value are coaching talk with
numbers: any prediction there is a false positive.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

from upcoach.language import LANGUAGES
from upcoach.security.pii import detect

DATA = Path(__file__).parent / "data" / "pii_languages.txt"
_MARK = re.compile(r"\{\{([A-Z_]+)\|(.+?)\}\}")


def load(split: str) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
    samples = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if not line.startswith(f"{split}: "):
            continue
        lang, raw = line.split(": ", 1)[1].split(" | ", 1)
        text, gold, pos = "", [], 0
        for m in _MARK.finditer(raw):
            text += raw[pos : m.start()]
            gold.append((m.group(1), len(text), len(text) + len(m.group(2))))
            text += m.group(2)
            pos = m.end()
        samples.append((lang, text + raw[pos:], gold))
    return samples


def scores(split: str) -> dict[str, tuple[int, int, int, int]]:
    """Language -> (values, found, predictions, correct)."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for lang, text, gold in load(split):
        predicted = detect(text)
        row = stats[lang]
        for kind, s, e in gold:
            row[0] += 1
            row[1] += any(p.type == kind and p.start < e and s < p.end for p in predicted)
        for p in predicted:
            row[2] += 1
            row[3] += any(kind == p.type and p.start < e and s < p.end for kind, s, e in gold)
    return {lang: (v[0], v[1], v[2], v[3]) for lang, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", action="store_true", help="list every value missed or wrongly found")
    args = parser.parse_args()
    for split in ("dev", "held"):
        print(f"\n## {split}\n\n| language | values | recall | predictions | precision |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for lang, (n, found, predicted, correct) in sorted(
            scores(split).items(), key=lambda kv: LANGUAGES.index(kv[0])
        ):
            precision = f"{correct / predicted:.2f}" if predicted else "n/a"
            print(f"| {lang} | {n} | {found / n:.2f} | {predicted} | {precision} |")
        if args.errors:
            for lang, text, gold in load(split):
                predicted = [(p.type, p.start, p.end) for p in detect(text)]
                missed = [
                    (k, text[s:e])
                    for k, s, e in gold
                    if not any(t == k and ps < e and s < pe for t, ps, pe in predicted)
                ]
                wrong = [
                    (t, text[s:e])
                    for t, s, e in predicted
                    if not any(k == t and s < ge and gs < e for k, gs, ge in gold)
                ]
                if missed or wrong:
                    print(f"  {lang}: missed {missed} wrong {wrong} | {text}")


if __name__ == "__main__":
    main()
