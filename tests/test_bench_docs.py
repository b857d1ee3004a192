"""make bench rewrites docs/benchmarks.md section by section (benchmarks/run.py merge)."""

from __future__ import annotations

from benchmarks.run import HEADER, SECTIONS, merge


def _headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("## ")]


def test_a_rerun_section_is_replaced_in_place_and_every_other_section_kept() -> None:
    doc = (
        HEADER
        + f"{SECTIONS['local']} old local\n\nold figures\n\n"
        + "## Request records: written by another command\n\nkept figures\n\n"
        + f"{SECTIONS['routing']} old routing\n\nold routing figures\n"
    )
    out = merge(doc, {"routing": f"{SECTIONS['routing']} new routing\n\nnew figures\n"})
    assert _headings(out) == [
        f"{SECTIONS['local']} old local",
        "## Request records: written by another command",
        f"{SECTIONS['routing']} new routing",
    ]
    assert "kept figures" in out and "old routing figures" not in out
    assert merge(out, {}) == out


def test_a_section_new_to_the_file_is_appended() -> None:
    out = merge(HEADER + "## Request records: x\n", {"chips": f"{SECTIONS['chips']} first run\n"})
    assert _headings(out) == ["## Request records: x", f"{SECTIONS['chips']} first run"]
