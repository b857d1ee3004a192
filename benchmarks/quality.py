"""Coaching answer quality of the default model (standalone: `python benchmarks/quality.py`), for `make bench`.

Runs `upcoach eval quality` (src/upcoach/eval_cli.py) three times on the same requests: the path as it was before
issue 15 (no persona, no grounding, no checks, temperature 0.7), everything on, and everything on but grounding.
``QUALITY_LIMIT`` (environment) scores that many requests spread over the file instead of all of them: the full
set takes hours on a small shared machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402

HEADING = "## Coaching answer quality:"
CONFIGS = {
    "before (no persona, no grounding, no checks, temperature 0.7)": [
        "--no-persona", "--no-grounding", "--no-checks", "--temperature", "0.7"],
    "persona + grounding + checks (default)": [],
    "persona + checks, grounding off": ["--no-grounding"],
}  # fmt: skip
COLUMNS = ("rubric_mean", "unusable", "refusal", "unrequested_code", "unsafe_advice", "repetition", "off_topic",
           "must_hit_rate", "must_not_violations", "library_answers", "latency_ms_median")  # fmt: skip


def run(limit: int | None) -> dict[str, dict[str, object]]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in CONFIGS.items():
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, "-m", "upcoach.cli", "eval", "quality", "--out", str(out), *flags]
            if limit:
                cmd += ["--limit", str(limit)]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            results[name] = json.loads(out.read_text())["summary"]
    return results


def to_markdown(results: dict[str, dict[str, object]]) -> str:
    lines = ["| configuration | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, summary in results.items():
        failures = summary["failures"]
        assert isinstance(failures, dict)
        values = [summary.get(c, failures.get(c)) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(str(v) for v in values) + " |")
    return "\n".join(lines)


def section(command: str) -> str:
    limit = int(os.environ.get("QUALITY_LIMIT", "0")) or None
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = run(limit)
    return "\n".join(
        [
            f"{HEADING} rubric and answer checks, before and after issue 15 (docs/quality.md)",
            "",
            f"- command: `{command}` (benchmarks/quality.py, `upcoach eval quality`); date: {when}",
            f"- machine: {machine()}",
            f"- requests: benchmarks/data/quality_requests.jsonl, {limit or 'all'} (spread over the file); rubric 1-5",
            "",
            to_markdown(results),
            "",
        ]
    )


if __name__ == "__main__":
    print(section("python benchmarks/quality.py"))
