"""Accuracy and speed of language identifiers on short messages (tests/language/data/short_messages.txt).

    .venv/bin/python -m benchmarks.language_id

Scores py3langid (the identifier upcoach.language uses) and, when installed (``pip install
lingua-language-detector``; not a dependency), lingua, both restricted to the supported languages, three ways:
without a locale, with the message's own locale as the prior, and with an "en-US" locale on every message (a
user who writes in another language than the one they chose). Figures go to docs/languages.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from upcoach.language import LANGUAGES, LOCALE_PRIOR, identify

DATA = Path(__file__).resolve().parent.parent / "tests" / "language" / "data" / "short_messages.txt"


def load() -> list[tuple[str, str]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            lang, text = line.split(" | ", 1)
            rows.append((lang, text))
    return rows


def _lingua() -> Callable[[str, str | None], str] | None:
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError:
        return None
    codes = [getattr(IsoCode639_1, lang.upper()) for lang in LANGUAGES]
    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_preloaded_language_models().build()

    def guess(text: str, locale: str | None) -> str:
        values = detector.compute_language_confidence_values(text)
        scores = {v.language.iso_code_639_1.name.lower(): v.value for v in values}
        prior = (locale or "").split("-")[0]
        if prior in scores:
            scores[prior] *= LOCALE_PRIOR
        return max(scores, key=scores.__getitem__) if any(scores.values()) else (prior or "en")

    return guess


def score(name: str, guess: Callable[[str, str | None], str], rows: list[tuple[str, str]]) -> None:
    for mode in ("no locale", "own locale", "en-US locale"):
        right = 0
        wrong: dict[str, int] = {}
        for lang, text in rows:
            locale = None if mode == "no locale" else lang if mode == "own locale" else "en-US"
            if guess(text, locale) == lang:
                right += 1
            else:
                wrong[lang] = wrong.get(lang, 0) + 1
        misses = ", ".join(f"{lang} {n}" for lang, n in sorted(wrong.items())) or "none"
        print(f"| {name} | {mode} | {right}/{len(rows)} = {right / len(rows):.3f} | {misses} |")
    guess(rows[0][1], None)  # warm
    start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for _lang, text in rows:
            guess(text, None)
    per = (time.perf_counter() - start) / (rounds * len(rows)) * 1e6
    print(f"| {name} | speed | {per:.0f} µs per message | |")


def main() -> None:
    rows = load()
    print(f"{len(rows)} messages, {len(LANGUAGES)} languages\n")
    print("| identifier | locale | accuracy | misses by language |\n|---|---|---|---|")
    score("py3langid", identify, rows)
    lingua = _lingua()
    if lingua is not None:
        score("lingua", lingua, rows)
    else:
        print("lingua is not installed: pip install lingua-language-detector to compare")


if __name__ == "__main__":
    main()
