"""Workers sharing a data folder never share a spool file, and a replacement worker replays what a dead one left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from upcoach.observability.spool import claim_folder


def test_one_process_keeps_the_plain_folder(tmp_path: Path) -> None:
    assert claim_folder(tmp_path / "spool", 1) == (tmp_path / "spool", None)


def test_each_worker_claims_its_own_folder_and_a_freed_one_is_taken_over(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    first, first_claim = claim_folder(root, 2)
    second, second_claim = claim_folder(root, 2)
    assert first == root / "worker-0" and second == root / "worker-1"
    assert first_claim is not None and second_claim is not None
    os.close(first_claim)  # the first worker died: the kernel drops its lock
    again, claim = claim_folder(root, 2)
    assert again == first
    for fd in (second_claim, claim):
        assert fd is not None
        os.close(fd)


def test_a_claim_held_by_another_process_is_not_taken(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path;"
         "from upcoach.observability.spool import claim_folder;"
         f"print(claim_folder(Path({str(root)!r}), 2)[0], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == str(root / "worker-0")
        folder, claim = claim_folder(root, 2)
        assert folder == root / "worker-1" and claim is not None
        os.close(claim)
    finally:
        holder.kill()
        holder.wait()
    folder, claim = claim_folder(root, 2)  # the holder is gone: its folder is free again
    assert folder == root / "worker-0" and claim is not None
    os.close(claim)
