"""Scores the injection detector per language on tests/security/data/injection_languages.txt (docs/security.md).

    .venv/bin/python -m tests.security.injection_languages_eval            # add --errors to list every miss

"Detected" means ``flag`` or ``block``, as in the detector's other evaluations; FP is the share of coaching
messages detected. The detector is the one the app builds (``InjectionDetector()`` with the shipped model).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from upcoach.language import LANGUAGES
from upcoach.security.injection import InjectionDetector

DATA = Path(__file__).parent / "data" / "injection_languages.txt"


def load(split: str) -> list[tuple[str, bool, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{split}: "):
            lang, label, text = line.split(": ", 1)[1].split(" | ", 2)
            rows.append((lang, label == "inj", text))
    return rows


def scores(detector: InjectionDetector, split: str) -> dict[str, tuple[int, int, int, int, int]]:
    """Language -> (injections, detected, blocked, coaching messages, detected)."""
    stats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for lang, injection, text in load(split):
        verdict = detector.scan(text).verdict
        row = stats[lang]
        if injection:
            row[0] += 1
            row[1] += verdict != "allow"
            row[2] += verdict == "block"
        else:
            row[3] += 1
            row[4] += verdict != "allow"
    return {lang: (v[0], v[1], v[2], v[3], v[4]) for lang, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", action="store_true", help="list every message scored wrong")
    args = parser.parse_args()
    detector = InjectionDetector()
    for split in ("dev", "held"):
        print(f"\n## {split}\n")
        print("| language | injections | recall | blocked | coaching | FP |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        by_lang = sorted(scores(detector, split).items(), key=lambda kv: LANGUAGES.index(kv[0]))
        for lang, (n, found, blocked, ok, fp) in by_lang:
            print(f"| {lang} | {n} | {found / n:.2f} | {blocked} | {ok} | {fp / ok:.2f} |")
        if args.errors:
            for lang, injection, text in load(split):
                result = detector.scan(text)
                if (result.verdict != "allow") != injection:
                    print(f"  {lang} {'missed' if injection else 'false positive'} ({result.score:.2f}): {text}")


if __name__ == "__main__":
    main()
