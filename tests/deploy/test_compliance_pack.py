"""The compliance pack's control mapping names code and tests that exist: a renamed file fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTROLS = ROOT / "docs" / "compliance" / "controls.md"


def named_paths(text: str) -> list[tuple[str, str]]:
    """(code, test) of every table row."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`tests/"):
            rows.append((cells[1].strip("`"), cells[2].strip("`")))
    return rows


def test_every_control_names_existing_code_and_a_test() -> None:
    rows = named_paths(CONTROLS.read_text())
    assert len(rows) >= 30
    missing = [path for row in rows for path in row if not (ROOT / path).exists()]
    assert not missing, missing
    assert all(re.match(r"tests/.+/test_\w+\.py$", test) for _, test in rows)


def test_the_check_notices_a_missing_file() -> None:
    rows = named_paths("| x | `src/upcoach/nowhere.py` | `tests/nowhere/test_x.py` |")
    assert [p for row in rows for p in row if not (ROOT / p).exists()] == [
        "src/upcoach/nowhere.py",
        "tests/nowhere/test_x.py",
    ]
